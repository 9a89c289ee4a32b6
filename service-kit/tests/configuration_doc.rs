//! `docs/configuration.md` is the one documented list of variables: it must hold exactly
//! the table the code reads from. Run with `HERALD_BLESS=1` to rewrite it after a change.

const BEGIN: &str = "<!-- variables:begin -->\n";
const END: &str = "<!-- variables:end -->";

#[test]
fn configuration_doc_lists_every_variable_the_code_reads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let table = service_kit::config::markdown_table();
    if std::env::var_os("HERALD_BLESS").is_some() {
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..end],
        table,
        "docs/configuration.md is stale: run with HERALD_BLESS=1"
    );
}
