//! Every diagnostic code is documented, with an example, in `docs/diagnostics.md`.

use cnnc_spec::Code;

#[test]
fn every_code_has_a_documented_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/diagnostics.md");
    let doc = std::fs::read_to_string(path).expect("docs/diagnostics.md exists");
    for code in Code::ALL {
        let code = code.as_str();
        let heading = format!("\n## {code}: ");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("{code} is not documented"));
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        assert!(
            section.contains(&format!("[{code}]: ")),
            "{code} has no example output"
        );
    }
}
