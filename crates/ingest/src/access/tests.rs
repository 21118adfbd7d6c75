//! The access policy's rules, one by one: authentication, client ids, lanes, filters.

use super::*;

fn identity(name: &str, role: Role) -> Identity {
    Identity { name: name.into(), role, password: PasswordDigest::of(format!("pw-{name}").as_bytes()) }
}

fn policy(anonymous: Anonymous) -> Policy {
    Policy::new(
        vec![
            identity("hau-01", Role::Device),
            identity("gw-1", Role::Gateway { devices: vec!["cai-02".into(), "cai-03".into()] }),
            identity("board", Role::App { filters: vec!["mekong/v1/+/up".into(), "alerts/#".into()] }),
        ],
        anonymous,
    )
    .unwrap()
}

fn login<'a>(user: &'a str, password: &'a str) -> Option<(&'a str, &'a [u8])> {
    Some((user, password.as_bytes()))
}

#[test]
fn a_connect_needs_the_right_password_and_a_client_id_of_its_own() {
    let p = policy(Anonymous::Refused);
    let name = |c: Result<Caller<'_>, Refusal>| c.map(|c| c.label().to_owned());
    assert_eq!(name(p.authenticate("hau-01", login("hau-01", "pw-hau-01"))), Ok("hau-01".into()));
    assert_eq!(name(p.authenticate("board:3", login("board", "pw-board"))), Ok("board".into()));
    assert_eq!(p.authenticate("hau-01", login("hau-01", "pw-gw-1")), Err(Refusal::BadCredentials));
    assert_eq!(p.authenticate("nobody", login("nobody", "pw-nobody")), Err(Refusal::BadCredentials));
    assert_eq!(p.authenticate("hau-01", None), Err(Refusal::NoCredentials));
    // Right password, someone else's client id: that would take over their session.
    assert_eq!(p.authenticate("hau-01", login("gw-1", "pw-gw-1")), Err(Refusal::ClientIdMismatch));
    assert_eq!(p.authenticate("gw-1x", login("gw-1", "pw-gw-1")), Err(Refusal::ClientIdMismatch));
}

#[test]
fn anonymous_clients_get_a_device_lane_only_when_allowed_and_never_an_identitys() {
    let p = policy(Anonymous::AsDevice);
    assert_eq!(p.authenticate("legacy-9", None), Ok(Caller::AnonymousDevice("legacy-9")));
    assert_eq!(p.authenticate("hau-01", None), Err(Refusal::AnonymousClientId));
    assert_eq!(p.authenticate("board:1", None), Err(Refusal::AnonymousClientId));
    assert_eq!(p.authenticate("Not-A-Device", None), Err(Refusal::AnonymousClientId));
    assert_eq!(p.authenticate("", None), Err(Refusal::AnonymousClientId));
    let legacy = p.caller("legacy-9").unwrap();
    assert_eq!(Policy::may_publish(legacy, "mekong/v1/legacy-9/up"), Ok(()));
    assert_eq!(Policy::may_publish(legacy, "mekong/v1/hau-01/up"), Err(Refusal::OutOfLane));
    assert_eq!(Policy::may_publish(legacy, "mekong/v1/legacy-9/down"), Err(Refusal::OutOfLane));
    assert_eq!(Policy::may_subscribe(legacy, "mekong/v1/legacy-9/down"), Ok(()));
    assert_eq!(Policy::may_subscribe(legacy, "#"), Err(Refusal::OutOfLane));
    assert_eq!(policy(Anonymous::Refused).caller("legacy-9"), None);
}

#[test]
fn every_identity_stays_in_its_lane() {
    let p = policy(Anonymous::Refused);
    let device = p.caller("hau-01").unwrap();
    let gateway = p.caller("gw-1").unwrap();
    let app = p.caller("board:x").unwrap();
    let publish = |c, t: &str| Policy::may_publish(c, t).is_ok();
    let subscribe = |c, f: &str| Policy::may_subscribe(c, f).is_ok();

    assert!(publish(device, "mekong/v1/hau-01/up"));
    for topic in ["mekong/v1/cai-02/up", "mekong/v1/hau-01/down", "mekong/v1/hau-01/up/x", "alerts/a", "mekong/v1/+/up"]
    {
        assert!(!publish(device, topic), "device publishes on {topic}");
    }
    assert!(subscribe(device, "mekong/v1/hau-01/down"));
    for filter in
        ["#", "mekong/v1/+/up", "mekong/v1/+/down", "mekong/v1/cai-02/down", "mekong/v1/hau-01/up", "mekong/#"]
    {
        assert!(!subscribe(device, filter), "device subscribes to {filter}");
    }

    assert!(publish(gateway, "mekong/v1/cai-02/up") && publish(gateway, "mekong/v1/cai-03/up"));
    assert!(!publish(gateway, "mekong/v1/gw-1/up") && !publish(gateway, "mekong/v1/hau-01/up"));
    assert!(!publish(gateway, "mekong/v1/cai-02/down"));
    assert!(subscribe(gateway, "mekong/v1/cai-03/down") && !subscribe(gateway, "mekong/v1/hau-01/down"));
    assert!(!subscribe(gateway, "mekong/v1/+/down"));

    assert!(subscribe(app, "mekong/v1/+/up") && subscribe(app, "mekong/v1/hau-01/up"));
    assert!(subscribe(app, "alerts/#") && subscribe(app, "alerts") && subscribe(app, "alerts/water/+"));
    for filter in ["#", "mekong/v1/+/down", "mekong/v1/hau-01/down", "mekong/#", "mekong/v1/+/+", "alerts+", "a/#/b"] {
        assert!(!subscribe(app, filter), "app subscribes to {filter}");
    }
    assert!(!publish(app, "mekong/v1/hau-01/up") && !publish(app, "alerts/a"));
}

#[test]
fn a_filter_is_within_a_grant_only_if_every_topic_it_matches_is() {
    let check = |filter: &str, granted: &str, expected: bool| {
        assert_eq!(within(filter, granted), expected, "{filter} within {granted}");
    };
    check("a/b", "a/b", true);
    check("a/b", "a/+", true);
    check("a/+", "a/+", true);
    check("a/+", "a/b", false);
    check("a/#", "a/+", false);
    check("a/b/c", "a/+", false);
    check("a", "a/#", true);
    check("a/#", "a/#", true);
    check("a/b/#", "a/#", true);
    check("#", "a/#", false);
    check("+/b", "a/b", false);
    check("a/b", "#", true);
    check("#", "#", true);
    // MQTT-4.7.2-1: wildcards in the first level do not match `$` topics.
    check("$SYS/x", "#", false);
    check("$SYS/x", "+/x", false);
    check("$SYS/x", "$SYS/#", true);
    check("a/$b", "a/+", true);
}

#[test]
fn invalid_filters_and_identities_are_refused_with_the_reason() {
    for filter in ["", "a/#/b", "a#", "a/b+", "#/a"] {
        assert!(!is_valid_filter(filter), "{filter}");
    }
    for filter in ["#", "+", "a/+/b", "a/#", "/a", "a//b"] {
        assert!(is_valid_filter(filter), "{filter}");
    }
    let error = |identities: Vec<Identity>| Policy::new(identities, Anonymous::Refused).unwrap_err().to_string();
    assert!(error(vec![identity("a", Role::Device), identity("a", Role::App { filters: vec!["#".into()] })])
        .contains("appears twice"));
    assert!(error(vec![identity("Bad", Role::Device)]).contains("[a-z0-9-]"));
    assert!(error(vec![identity("g", Role::Gateway { devices: vec!["x/y".into()] })]).contains("not a device id"));
    assert!(
        error(vec![identity("b", Role::App { filters: vec!["a/#/b".into()] })]).contains("not a valid topic filter")
    );
    assert!(error(vec![identity("b", Role::App { filters: vec![] })]).contains("at least one filter"));
}

#[test]
fn a_digest_never_shows_in_full() {
    let digest = PasswordDigest::of(b"secret");
    let shown = format!("{digest:?}");
    assert!(shown.len() < 30 && !shown.contains(&format!("{:02x}{:02x}{:02x}", digest.0[2], digest.0[3], digest.0[4])));
}

#[test]
fn a_certificate_lets_in_only_the_registered_device_it_names() {
    let p = policy(Anonymous::Refused).with_certified_devices(["cai-09".to_owned(), "hau-01".to_owned()]);
    let names = |name: &'static str| move |n: &str| n == name;
    assert_eq!(p.authenticate_certificate("cai-09", names("cai-09")), Ok(Caller::CertifiedDevice("cai-09")));
    // A certificate for another device, or for a name that is no registered device.
    assert_eq!(p.authenticate_certificate("cai-09", names("hau-01")), Err(Refusal::CertificateMismatch));
    assert_eq!(p.authenticate_certificate("gw-1", names("gw-1")), Err(Refusal::CertificateMismatch));
    // Once in, it has a device's lane, counted under its own id.
    let device = p.caller("cai-09").unwrap();
    assert_eq!(device.label(), "cai-09");
    assert_eq!(Policy::may_publish(device, "mekong/v1/cai-09/up"), Ok(()));
    assert_eq!(Policy::may_subscribe(device, "#"), Err(Refusal::OutOfLane));
    // Without a certificate or a password, such a device is still refused.
    assert_eq!(p.authenticate("cai-09", None), Err(Refusal::NoCredentials));
}

#[test]
fn apps_granted_the_alerts_filter_follow_alerts_and_nobody_publishes_there() {
    use mekong_schema::topic::{AlertTopic, ALERTS_FILTER};
    let p = Policy::new(
        vec![
            identity("hau-01", Role::Device),
            identity("gw-1", Role::Gateway { devices: vec!["hau-01".into()] }),
            identity("ops", Role::App { filters: vec![ALERTS_FILTER.into()] }),
            identity("board", Role::App { filters: vec!["mekong/v1/+/up".into()] }),
        ],
        Anonymous::AsDevice,
    )
    .unwrap();
    let topic = AlertTopic { rule: "hau-flood", device: "hau-01" }.to_string();
    assert_eq!(topic, "mekong/v1/alerts/hau-flood/hau-01");
    let ops = p.caller("ops").unwrap();
    assert_eq!(Policy::may_subscribe(ops, ALERTS_FILTER), Ok(()));
    assert_eq!(Policy::may_subscribe(ops, "mekong/v1/alerts/hau-flood/+"), Ok(()));
    assert_eq!(Policy::may_subscribe(ops, &topic), Ok(()));
    assert_eq!(Policy::may_subscribe(p.caller("board").unwrap(), ALERTS_FILTER), Err(Refusal::OutOfLane));
    for name in ["hau-01", "gw-1", "ops", "legacy-9"] {
        let caller = p.caller(name).unwrap();
        assert_eq!(Policy::may_publish(caller, &topic), Err(Refusal::OutOfLane), "{name}");
    }
    for name in ["hau-01", "gw-1", "legacy-9"] {
        assert_eq!(Policy::may_subscribe(p.caller(name).unwrap(), ALERTS_FILTER), Err(Refusal::OutOfLane), "{name}");
    }
}
