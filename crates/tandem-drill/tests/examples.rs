//! Every scenario in examples/drills parses and passes the checks made before a drill runs.

#[test]
fn the_example_scenarios_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/drills");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = tandem_drill::Scenario::load(&path) {
                panic!("{e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} scenarios in {}", dir.display());
}
