use duo_runtime::config::Config;

const BASE: &str = include_str!("../examples/gateway.yaml");

#[test]
fn example_parses() {
    let c = Config::parse(BASE).unwrap();
    let again = Config::parse(&c.to_yaml()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn show_errors() {
    for (from, to) in [
        ("\"12345678\"", "\"1234567\""),
        ("kind: xds", "kind: ftp"),
        ("deadlineMs: 5000", "deadlineMs: -1"),
        ("facilityType: V6", "facilityTyp: V6"),
        (
            "https://duo.west.example/xca/iti38",
            "http://duo.west.example/xca/iti38",
        ),
    ] {
        let e = Config::parse(&BASE.replacen(from, to, 1)).unwrap_err();
        println!("{e}");
    }
}
