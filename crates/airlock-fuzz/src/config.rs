//! The configuration loader: YAML of any shape is parsed and checked
//! (`airlock policy check` without resolving secrets); a refusal always
//! says why.

/// The input is the file's text.
pub fn text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match airlock_config::check_text(text, "fuzz.yaml") {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal without an error");
            for e in errors {
                assert!(!e.to_string().is_empty());
            }
        }
    }
}
