//! `GET /v1/stats/messages`: time-bucketed message statistics.

pub mod buckets;
pub mod params;
