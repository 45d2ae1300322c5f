//! The tool-call policy (`kafclaw_actors::policy::decide`).
//!
//! Properties: a blocked sender or a denied tool is always denied; nothing above the runtime
//! restriction's tier is ever allowed; an external sender never runs above
//! `max_tier_external`, nor an owner above `max_tier_owner` without approval; deciding is
//! deterministic.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use kafclaw_actors::policy::{
    decide, Decision, PolicyInput, PolicySettings, Restriction, SenderKind,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    sender: u8,
    tool: &'a str,
    tier: u8,
    max_tier: Option<u8>,
    denied: Vec<&'a str>,
    blocked: bool,
    max_tier_owner: u8,
    max_tier_external: u8,
}

fn structured(input: Input<'_>) {
    let senders = [SenderKind::Owner, SenderKind::External];
    let sender = senders[usize::from(input.sender) % senders.len()];
    let restriction = Restriction {
        max_tier: input.max_tier,
        denied_tools: input
            .denied
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    };
    let settings = PolicySettings {
        max_tier_owner: input.max_tier_owner,
        max_tier_external: input.max_tier_external,
        approval_timeout_seconds: 120,
    };
    let policy = PolicyInput {
        sender,
        channel: "fuzz",
        tool: input.tool,
        tier: input.tier,
        restriction: &restriction,
        sender_blocked: input.blocked,
        settings: &settings,
    };
    let decision = decide(&policy);
    assert_eq!(decide(&policy), decision);
    if input.blocked || restriction.denied_tools.contains(input.tool) {
        assert!(matches!(decision, Decision::Deny(_)), "{decision:?}");
    }
    if input.max_tier.is_some_and(|max| input.tier > max) {
        assert_ne!(decision, Decision::Allow);
    }
    match sender {
        SenderKind::External if input.tier > input.max_tier_external => {
            assert!(matches!(decision, Decision::Deny(_)), "{decision:?}")
        }
        SenderKind::Owner if input.tier > input.max_tier_owner => {
            assert_ne!(decision, Decision::Allow)
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        structured(input);
    }
});
