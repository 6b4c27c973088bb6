//! `duo-operator`: reconciles DuoGateway, DuoCommunity and MitzConnection resources.
fn main() {
    eprintln!("duo-operator: not implemented yet");
    std::process::exit(1);
}
