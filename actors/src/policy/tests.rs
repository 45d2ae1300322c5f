use std::collections::BTreeSet;

use super::*;

use Decision::{Allow, NeedsApproval};
use SenderKind::{External, Owner};

fn deny(reason: DenyReason) -> Decision {
    Decision::Deny(reason)
}

fn restriction(max_tier: Option<u8>, denied: &[&str]) -> Restriction {
    Restriction {
        max_tier,
        denied_tools: denied
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    }
}

#[track_caller]
fn check(
    sender: SenderKind,
    tool: Tool,
    restriction: &Restriction,
    blocked: bool,
    expected: Decision,
) {
    let settings = PolicySettings::default();
    let input = PolicyInput {
        sender,
        channel: "whatsapp",
        tool: tool.name(),
        tier: tool.tier(),
        restriction,
        sender_blocked: blocked,
        settings: &settings,
    };
    assert_eq!(
        decide(&input),
        expected,
        "{sender:?} {tool:?} {restriction:?} blocked={blocked}"
    );
}

#[test]
fn decision_matrix() {
    let none = Restriction::default();
    let tier0 = restriction(Some(0), &[]);
    let tier1 = restriction(Some(1), &[]);
    let no_exec = restriction(None, &["exec"]);
    let above_r = |tier, max| deny(DenyReason::AboveRestriction { tier, max });
    let above_s = |tier, max| deny(DenyReason::AboveSenderLimit { tier, max });
    use Tool::*;
    #[rustfmt::skip]
    let table = [
        // sender, tool, restriction, blocked → decision
        (Owner, ReadFile, &none, false, Allow),
        (Owner, WriteFile, &none, false, Allow),
        (Owner, Exec, &none, false, Allow),
        (External, ReadFile, &none, false, Allow),
        (External, ListDir, &none, false, Allow),
        (External, WriteFile, &none, false, above_s(1, 0)),
        (External, EditFile, &none, false, above_s(1, 0)),
        (External, Exec, &none, false, above_s(2, 0)),
        // Runtime restriction to tier 0 (lockdown): denied for owners too, never an approval.
        (Owner, ReadFile, &tier0, false, Allow),
        (Owner, ListDir, &tier0, false, Allow),
        (Owner, WriteFile, &tier0, false, above_r(1, 0)),
        (Owner, EditFile, &tier0, false, above_r(1, 0)),
        (Owner, Exec, &tier0, false, above_r(2, 0)),
        (External, ReadFile, &tier0, false, Allow),
        (External, WriteFile, &tier0, false, above_r(1, 0)),
        (External, Exec, &tier0, false, above_r(2, 0)),
        // Runtime restriction to tier 1.
        (Owner, EditFile, &tier1, false, Allow),
        (Owner, WriteFile, &tier1, false, Allow),
        (Owner, Exec, &tier1, false, above_r(2, 1)),
        (External, Exec, &tier1, false, above_r(2, 1)),
        (External, WriteFile, &tier1, false, above_s(1, 0)),
        // A denied tool, for everyone, whatever the tier.
        (Owner, Exec, &no_exec, false, deny(DenyReason::ToolDenied)),
        (External, Exec, &no_exec, false, deny(DenyReason::ToolDenied)),
        (Owner, ReadFile, &no_exec, false, Allow),
        // A blocked sender is denied everything, before any other rule.
        (Owner, ReadFile, &none, true, deny(DenyReason::SenderBlocked)),
        (Owner, Exec, &no_exec, true, deny(DenyReason::SenderBlocked)),
        (External, ReadFile, &tier0, true, deny(DenyReason::SenderBlocked)),
        (External, Exec, &none, true, deny(DenyReason::SenderBlocked)),
    ];
    for (sender, tool, restriction, blocked, expected) in table {
        check(sender, tool, restriction, blocked, expected);
    }
}

#[test]
fn configured_sender_limits_apply() {
    let settings = PolicySettings {
        max_tier_owner: 0,
        max_tier_external: 1,
        approval_timeout_seconds: 120,
    };
    let none = Restriction::default();
    let input = |sender, tier| PolicyInput {
        sender,
        channel: "c",
        tool: "t",
        tier,
        restriction: &none,
        sender_blocked: false,
        settings: &settings,
    };
    assert_eq!(decide(&input(Owner, 1)), NeedsApproval);
    assert_eq!(decide(&input(Owner, 0)), Allow);
    assert_eq!(decide(&input(External, 1)), Allow);
    assert_eq!(
        decide(&input(External, 2)),
        deny(DenyReason::AboveSenderLimit { tier: 2, max: 1 })
    );
}

#[test]
fn settings_deserialize_with_defaults() {
    let s: PolicySettings = serde_json::from_str(r#"{"max_tier_owner": 1}"#).unwrap();
    assert_eq!(s.max_tier_owner, 1);
    assert_eq!(s.max_tier_external, 0);
    assert_eq!(s.approval_timeout_seconds, 120);
}

#[test]
fn tools_have_names_tiers_and_function_schemas() {
    for (tool, name, tier, required) in [
        (Tool::ReadFile, "read_file", 0, vec!["path"]),
        (Tool::ListDir, "list_dir", 0, vec!["path"]),
        (Tool::WriteFile, "write_file", 1, vec!["path", "content"]),
        (
            Tool::EditFile,
            "edit_file",
            1,
            vec!["path", "old_text", "new_text"],
        ),
        (Tool::Exec, "exec", 2, vec!["command"]),
    ] {
        assert_eq!(tool.name(), name);
        assert_eq!(tool.tier(), tier);
        assert_eq!(Tool::from_name(name), Some(tool));
        let schema = tool.schema();
        assert_eq!(schema["type"], "function");
        assert_eq!(schema["function"]["name"], name);
        assert_eq!(
            schema["function"]["parameters"]["required"],
            serde_json::json!(required)
        );
        for field in required {
            assert!(schema["function"]["parameters"]["properties"][field].is_object());
        }
    }
    assert_eq!(Tool::from_name("shell"), None);
}

#[test]
fn a_runtime_restriction_is_never_an_approval_for_anyone() {
    // Whatever the configured limits, a tier above the operator's restriction is a denial that
    // names the restriction, for owners and external senders alike.
    for (max_tier_owner, max_tier_external) in [(0, 0), (1, 0), (2, 0), (2, 2), (0, 2)] {
        let settings = PolicySettings {
            max_tier_owner,
            max_tier_external,
            approval_timeout_seconds: 120,
        };
        for max in 0..=2u8 {
            let restriction = restriction(Some(max), &[]);
            for tier in 0..=2u8 {
                for sender in [Owner, External] {
                    let input = PolicyInput {
                        sender,
                        channel: "api",
                        tool: "t",
                        tier,
                        restriction: &restriction,
                        sender_blocked: false,
                        settings: &settings,
                    };
                    let decision = decide(&input);
                    if tier > max {
                        assert_eq!(
                            decision,
                            deny(DenyReason::AboveRestriction { tier, max }),
                            "{sender:?} tier {tier} under max_tier {max} ({settings:?})"
                        );
                    } else {
                        assert_ne!(
                            decision,
                            deny(DenyReason::AboveRestriction { tier, max }),
                            "{sender:?} tier {tier} under max_tier {max}"
                        );
                    }
                }
            }
        }
    }
    let reason = DenyReason::AboveRestriction { tier: 2, max: 0 }.to_string();
    assert!(
        reason.contains("restricted") && reason.contains("operator"),
        "{reason}"
    );
}

#[test]
fn skill_run_is_tier_two_and_never_runs_for_an_external_sender() {
    assert_eq!(Tool::SkillRun.tier(), 2);
    assert_eq!(Tool::from_name("skill_run"), Some(Tool::SkillRun));
    assert!(!Tool::BUILT_IN.contains(&Tool::SkillRun));
    let open = PolicySettings {
        max_tier_owner: 2,
        max_tier_external: 2,
        approval_timeout_seconds: 1,
    };
    let none = restriction(None, &[]);
    let input = |sender, settings| PolicyInput {
        sender,
        channel: "whatsapp",
        tool: SKILL_RUN,
        tier: 2,
        restriction: &none,
        sender_blocked: false,
        settings,
    };
    assert_eq!(
        decide(&input(External, &open)),
        deny(DenyReason::OwnersOnly)
    );
    assert_eq!(decide(&input(Owner, &open)), Allow);
    let strict = PolicySettings {
        max_tier_owner: 1,
        ..open.clone()
    };
    assert_eq!(decide(&input(Owner, &strict)), NeedsApproval);
    // The exec tool under the same open policy is allowed for the external sender.
    let exec = PolicyInput {
        tool: "exec",
        ..input(External, &open)
    };
    assert_eq!(decide(&exec), Allow);
}

#[test]
fn the_skill_run_schema_lists_only_the_offered_skills() {
    let offered = vec![OfferedSkill {
        name: "git-activity".into(),
        description: "report".into(),
        args: json!({"type": "object"}),
    }];
    let schema = skill_run_schema(&offered);
    assert_eq!(schema["function"]["name"], "skill_run");
    assert_eq!(
        schema["function"]["parameters"]["properties"]["skill"]["enum"],
        json!(["git-activity"])
    );
}
