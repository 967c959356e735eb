//! The rules of contract §1, one by one, with their exact codes.

use closeloop_domain::{EventType, Stage};
use serde_json::{Value, json};

use crate::{
    Step, acknowledged, action_planned, change_made, closed_loop, given, history_accepting,
    loop_event_types, no_change, received, reopened, reopened_loop, reported_back, responded, step,
    ts,
};

/// Asserts that `command` is refused as `invalid_data` where valid data would be accepted.
fn rejects_as_invalid(command: Step) {
    given(&history_accepting(command.event_type))
        .when(command)
        .then_rejects("invalid_data");
}

/// Asserts that `command` is accepted where its type is.
fn accepts(command: Step) {
    let event_type = command.event_type;
    given(&history_accepting(event_type))
        .when(command)
        .then_records(event_type);
}

// --- feedback.received: opening a loop ---------------------------------------------------------

#[test]
fn feedback_opens_a_loop_at_stage_received() {
    given(&[])
        .when(received())
        .then_records(EventType::FeedbackReceived)
        .at_stage(Stage::Received);
}

#[test]
fn feedback_for_an_existing_loop_is_loop_exists() {
    given(&[received()])
        .when(received())
        .then_rejects("loop_exists");
    given(&[received(), acknowledged(), responded()])
        .when(received())
        .then_rejects("loop_exists");
}

#[test]
fn feedback_for_a_closed_loop_is_loop_exists_too() {
    given(&closed_loop())
        .when(received())
        .then_rejects("loop_exists");
}

#[test]
fn every_other_event_for_a_loop_never_received_is_unknown_loop() {
    for event_type in loop_event_types() {
        given(&[])
            .when(step(event_type))
            .then_rejects("unknown_loop");
    }
}

#[test]
fn received_at_defaults_to_the_command_time() {
    let recorded = given(&[])
        .when(received().without("received_at").at("2026-11-27T09:30:00Z"))
        .then_records(EventType::FeedbackReceived)
        .with_field("received_at", &json!("2026-11-27T09:30:00Z"));
    assert_eq!(recorded.after.received_at, ts("2026-11-27T09:30:00Z"));
    assert_eq!(recorded.after.close_clock_from, ts("2026-11-27T09:30:00Z"));
}

#[test]
fn received_at_is_kept_when_given() {
    let recorded = given(&[])
        .when(
            received()
                .with("received_at", json!("2026-11-20T08:15:00Z"))
                .at("2026-11-27T09:30:00Z"),
        )
        .then_records(EventType::FeedbackReceived)
        .with_field("received_at", &json!("2026-11-20T08:15:00Z"));
    assert_eq!(recorded.after.received_at, ts("2026-11-20T08:15:00Z"));
    assert_eq!(recorded.after.close_clock_from, ts("2026-11-20T08:15:00Z"));
}

#[test]
fn received_at_with_an_offset_is_the_same_instant() {
    given(&[])
        .when(received().with("received_at", json!("2026-11-20T08:15:00+01:00")))
        .then_records(EventType::FeedbackReceived)
        .with_field("received_at", &json!("2026-11-20T07:15:00Z"));
}

// --- steps may be skipped ----------------------------------------------------------------------

#[test]
fn a_reply_may_come_without_an_acknowledgement() {
    given(&[received()])
        .when(responded())
        .then_records(EventType::Responded)
        .at_stage(Stage::Responded);
}

#[test]
fn an_action_may_be_planned_straight_after_receipt() {
    given(&[received()])
        .when(action_planned())
        .then_records(EventType::ActionPlanned)
        .at_stage(Stage::ActionPlanned);
}

#[test]
fn a_change_may_be_made_straight_after_receipt() {
    given(&[received()])
        .when(change_made())
        .then_records(EventType::ChangeMade)
        .at_stage(Stage::OutcomeRecorded);
}

#[test]
fn no_change_may_be_recorded_straight_after_receipt() {
    given(&[received()])
        .when(no_change())
        .then_records(EventType::NoChange)
        .at_stage(Stage::OutcomeRecorded);
}

#[test]
fn every_step_in_order_closes_the_loop() {
    given(&[
        received(),
        acknowledged(),
        responded(),
        action_planned(),
        change_made(),
    ])
    .when(reported_back())
    .then_records(EventType::ReportedBack)
    .at_stage(Stage::Closed);
}

// --- stage never moves backwards ---------------------------------------------------------------

#[test]
fn a_late_acknowledgement_is_accepted_but_keeps_the_stage() {
    let recorded = given(&[received(), responded()])
        .when(acknowledged().at("2026-11-24T15:00:00Z"))
        .then_records(EventType::Acknowledged)
        .at_stage(Stage::Responded);
    assert_eq!(
        recorded.after.acknowledged_at,
        Some(ts("2026-11-24T15:00:00Z"))
    );
}

#[test]
fn a_late_acknowledgement_still_counts_once() {
    given(&[received(), responded(), acknowledged()])
        .when(acknowledged())
        .then_rejects("already_acknowledged");
}

#[test]
fn a_reply_after_an_action_keeps_stage_action_planned() {
    given(&[received(), action_planned()])
        .when(responded())
        .then_records(EventType::Responded)
        .at_stage(Stage::ActionPlanned);
}

#[test]
fn a_plan_after_the_outcome_keeps_stage_outcome_recorded() {
    given(&[received(), no_change()])
        .when(action_planned())
        .then_records(EventType::ActionPlanned)
        .at_stage(Stage::OutcomeRecorded);
}

#[test]
fn a_reply_after_the_outcome_keeps_stage_outcome_recorded() {
    given(&[received(), change_made()])
        .when(responded())
        .then_records(EventType::Responded)
        .at_stage(Stage::OutcomeRecorded);
}

#[test]
fn a_second_outcome_is_accepted_and_keeps_the_stage() {
    given(&[received(), change_made()])
        .when(no_change())
        .then_records(EventType::NoChange)
        .at_stage(Stage::OutcomeRecorded);
}

// --- already_acknowledged ----------------------------------------------------------------------

#[test]
fn the_first_acknowledgement_is_accepted() {
    given(&[received()])
        .when(acknowledged())
        .then_records(EventType::Acknowledged)
        .at_stage(Stage::Acknowledged);
}

#[test]
fn a_second_acknowledgement_is_already_acknowledged() {
    given(&[received(), acknowledged()])
        .when(acknowledged())
        .then_rejects("already_acknowledged");
    given(&[received(), acknowledged(), responded(), change_made()])
        .when(acknowledged())
        .then_rejects("already_acknowledged");
}

#[test]
fn an_acknowledgement_after_a_reopening_is_already_acknowledged() {
    given(&reopened_loop())
        .when(acknowledged())
        .then_rejects("already_acknowledged");
}

#[test]
fn a_loop_reopened_before_any_acknowledgement_may_still_be_acknowledged_once() {
    given(&[received(), no_change(), reported_back(), reopened()])
        .when(acknowledged())
        .then_records(EventType::Acknowledged)
        .at_stage(Stage::Responded);
}

// --- no_outcome --------------------------------------------------------------------------------

#[test]
fn reporting_back_with_no_outcome_is_no_outcome() {
    given(&[received()])
        .when(reported_back())
        .then_rejects("no_outcome");
    given(&[received(), acknowledged(), responded(), action_planned()])
        .when(reported_back())
        .then_rejects("no_outcome");
}

#[test]
fn reporting_back_after_a_change_closes_the_loop() {
    given(&[received(), change_made()])
        .when(reported_back())
        .then_records(EventType::ReportedBack)
        .at_stage(Stage::Closed);
}

#[test]
fn reporting_back_after_no_change_closes_the_loop() {
    given(&[received(), no_change()])
        .when(reported_back())
        .then_records(EventType::ReportedBack)
        .at_stage(Stage::Closed);
}

#[test]
fn reporting_back_after_a_reopening_needs_a_new_outcome() {
    given(&reopened_loop())
        .when(reported_back())
        .then_rejects("no_outcome");
    given(&[reopened_loop(), vec![responded(), action_planned()]].concat())
        .when(reported_back())
        .then_rejects("no_outcome");
}

// --- loop_closed -------------------------------------------------------------------------------

#[test]
fn a_closed_loop_refuses_every_event_but_a_reopening() {
    for event_type in
        loop_event_types().filter(|&t| t != EventType::Reopened && !t.recorded_by_closeloop_only())
    {
        given(&closed_loop())
            .when(step(event_type))
            .then_rejects("loop_closed");
    }
}

#[test]
fn a_closed_loop_refuses_an_acknowledgement_as_loop_closed_even_when_acknowledged() {
    given(&[received(), acknowledged(), change_made(), reported_back()])
        .when(acknowledged())
        .then_rejects("loop_closed");
}

#[test]
fn a_loop_closed_a_second_time_is_closed_again() {
    let closed_twice = [reopened_loop(), vec![no_change(), reported_back()]].concat();
    for event_type in
        loop_event_types().filter(|&t| t != EventType::Reopened && !t.recorded_by_closeloop_only())
    {
        given(&closed_twice)
            .when(step(event_type))
            .then_rejects("loop_closed");
    }
}

// --- erasures and story approvals (contract §3 v1.1) -----------------------------------------

#[test]
fn erasures_and_story_approvals_are_accepted_in_every_stage_and_change_neither_stage_nor_status() {
    let histories = [
        vec![received()],
        vec![received(), acknowledged()],
        vec![received(), change_made()],
        closed_loop(),
        reopened_loop(),
    ];
    for history in histories {
        let before = given(&history).into_state().expect("a received loop");
        for event_type in [EventType::Erased, EventType::StoryApproved] {
            let recorded = given(&history)
                .when(step(event_type))
                .then_records(event_type);
            assert_eq!(
                recorded.after.stage, before.stage,
                "{event_type} moved the stage"
            );
            assert_eq!(recorded.after.status(), before.status());
            assert_eq!(recorded.after.version, before.version + 1);
            assert_eq!(recorded.after.first_contact_at, before.first_contact_at);
        }
    }
}

#[test]
fn erasures_and_story_approvals_need_a_received_loop() {
    for event_type in [EventType::Erased, EventType::StoryApproved] {
        given(&[])
            .when(step(event_type))
            .then_rejects("unknown_loop");
    }
}

// --- reopening ---------------------------------------------------------------------------------

#[test]
fn reopening_a_closed_loop_opens_it_at_stage_responded() {
    let recorded = given(&closed_loop())
        .when(reopened().at("2026-12-07T11:00:00Z"))
        .then_records(EventType::Reopened)
        .at_stage(Stage::Responded);
    assert_eq!(recorded.after.closed_at, None);
    assert!(!recorded.after.has_outcome);
    assert_eq!(recorded.after.close_clock_from, ts("2026-12-07T11:00:00Z"));
}

#[test]
fn reopening_an_open_loop_is_not_closed() {
    for history in [
        vec![received()],
        vec![received(), acknowledged()],
        vec![received(), responded()],
        vec![received(), action_planned()],
        vec![received(), change_made()],
        reopened_loop(),
    ] {
        given(&history).when(reopened()).then_rejects("not_closed");
    }
}

#[test]
fn a_reopened_loop_moves_forward_again() {
    given(&reopened_loop())
        .when(change_made())
        .then_records(EventType::ChangeMade)
        .at_stage(Stage::OutcomeRecorded);
}

#[test]
fn a_reopened_loop_closes_again_with_a_new_outcome_and_report_back() {
    given(&[reopened_loop(), vec![no_change()]].concat())
        .when(reported_back())
        .then_records(EventType::ReportedBack)
        .at_stage(Stage::Closed);
}

#[test]
fn a_loop_may_be_reopened_again_after_closing_again() {
    given(&[reopened_loop(), vec![change_made(), reported_back()]].concat())
        .when(reopened())
        .then_records(EventType::Reopened)
        .at_stage(Stage::Responded);
}

// --- invalid_data ------------------------------------------------------------------------------

#[test]
fn the_typical_data_of_every_event_type_is_accepted() {
    for event_type in EventType::ALL {
        accepts(step(event_type));
    }
}

#[test]
fn data_that_is_not_an_object_is_invalid_data() {
    for event_type in EventType::ALL {
        for data in [
            json!(null),
            json!("by pals"),
            json!(42),
            json!([{"by": "pals"}]),
        ] {
            rejects_as_invalid(Step::raw(event_type, data));
        }
    }
}

#[test]
fn feedback_needs_a_story_or_a_rating() {
    rejects_as_invalid(received().without("story").without("ratings"));
    rejects_as_invalid(received().with("story", json!("   ")).without("ratings"));
    rejects_as_invalid(received().without("story").with("ratings", json!({})));
    accepts(received().without("ratings"));
    accepts(received().without("story"));
}

#[test]
fn feedback_needs_a_valid_org_unit() {
    rejects_as_invalid(received().without("org_unit"));
    rejects_as_invalid(received().with("org_unit", json!("")));
    rejects_as_invalid(received().with("org_unit", json!("rxx//ward-7")));
    rejects_as_invalid(received().with("org_unit", json!("rxx/ward 7")));
    rejects_as_invalid(received().with("org_unit", json!(["rxx", "ward-7"])));
    accepts(received().with("org_unit", json!("rxx")));
}

#[test]
fn feedback_needs_a_known_channel() {
    rejects_as_invalid(received().without("channel"));
    rejects_as_invalid(received().with("channel", json!("fax")));
    rejects_as_invalid(received().with("channel", json!("Web")));
    for channel in [
        "web",
        "sms",
        "email",
        "phone",
        "paper",
        "in_person",
        "survey",
        "social",
    ] {
        accepts(received().with("channel", json!(channel)));
    }
    accepts(received().with("channel", json!("community_partner")));
    accepts(received().with("channel", json!("other")));
}

#[test]
fn the_fft_rating_is_a_whole_number_from_1_to_6() {
    for fft in [
        json!(0),
        json!(7),
        json!(-1),
        json!(2.5),
        json!("good"),
        json!(null),
    ] {
        rejects_as_invalid(received().with("ratings", json!({ "fft": fft })));
    }
    for fft in 1..=6 {
        accepts(
            received()
                .without("story")
                .with("ratings", json!({ "fft": fft })),
        );
    }
}

#[test]
fn other_ratings_are_any_numbers() {
    accepts(received().with(
        "ratings",
        json!({"fft": 1, "cleanliness": 4.5, "waiting": -2}),
    ));
    rejects_as_invalid(received().with("ratings", json!({"cleanliness": "clean"})));
    rejects_as_invalid(received().with("ratings", json!([1, 2])));
}

#[test]
fn feedback_fields_must_have_their_types() {
    rejects_as_invalid(received().with("received_at", json!("yesterday")));
    rejects_as_invalid(received().with("received_at", json!("2026-11-27")));
    rejects_as_invalid(received().with("themes", json!("communication")));
    rejects_as_invalid(received().with("themes", json!([""])));
    rejects_as_invalid(received().with("themes", json!(["  "])));
    rejects_as_invalid(received().with("themes", json!(["x".repeat(201)])));
    rejects_as_invalid(received().with("seldom_heard", json!([""])));
    rejects_as_invalid(received().with("seldom_heard", json!([7])));
    rejects_as_invalid(received().with("consent_to_publish", json!("yes")));
    rejects_as_invalid(received().with("author", json!("Jo Bloggs")));
    rejects_as_invalid(received().with("story", json!(42)));
    rejects_as_invalid(received().with("story", json!("x".repeat(100_001))));
}

#[test]
fn feedback_accepts_every_optional_field() {
    accepts(
        received()
            .with("received_at", json!("2026-11-20T08:15:00Z"))
            .with("seldom_heard", json!(["homeless"]))
            .with(
                "author",
                json!({"name": "Jo Bloggs", "contact": "jo@example.org"}),
            )
            .with("consent_to_publish", json!(true))
            .with("language", json!("cy"))
            .with("story", json!("x".repeat(100_000))),
    );
    accepts(received().with("author", json!({"anonymous": true})));
}

#[test]
fn by_is_required_and_not_blank_on_every_loop_event() {
    for event_type in loop_event_types() {
        rejects_as_invalid(step(event_type).without("by"));
        rejects_as_invalid(step(event_type).with("by", json!("")));
        rejects_as_invalid(step(event_type).with("by", json!(" \t ")));
        rejects_as_invalid(step(event_type).with("by", json!(42)));
        rejects_as_invalid(step(event_type).with("by", json!("x".repeat(20_001))));
    }
}

#[test]
fn each_loop_event_needs_its_own_required_text() {
    for (make, field) in [
        (responded as fn() -> Step, "text"),
        (action_planned, "description"),
        (change_made, "description"),
        (no_change, "reason"),
        (reported_back, "message"),
        (reopened, "reason"),
    ] {
        rejects_as_invalid(make().without(field));
        rejects_as_invalid(make().with(field, json!("  ")));
        rejects_as_invalid(make().with(field, json!(["text"])));
    }
}

#[test]
fn only_by_is_required_for_an_acknowledgement() {
    accepts(acknowledged().without("message"));
}

#[test]
fn optional_loop_event_fields_must_have_their_types() {
    rejects_as_invalid(action_planned().with("due", json!("next week")));
    rejects_as_invalid(action_planned().with("due", json!("2027-02-30")));
    rejects_as_invalid(action_planned().with("owner", json!(7)));
    rejects_as_invalid(change_made().with("change_id", json!({"id": 1})));
    rejects_as_invalid(reported_back().with("channel", json!("fax")));
    rejects_as_invalid(acknowledged().with("message", json!(false)));
    accepts(action_planned().without("owner").without("due"));
    accepts(change_made().with("evidence", json!({"url": "https://example.org/minutes"})));
    accepts(reported_back().without("channel"));
}

#[test]
fn invalid_data_is_reported_even_where_the_rules_would_refuse_the_command() {
    given(&closed_loop())
        .when(acknowledged().without("by"))
        .then_rejects("invalid_data");
}

// --- unknown fields ----------------------------------------------------------------------------

#[test]
fn unknown_fields_are_kept_in_the_decided_event() {
    let extra = json!({"ticket": {"no": 7, "tags": ["a", null]}, "score": 1.5});
    for event_type in EventType::ALL {
        given(&history_accepting(event_type))
            .when(step(event_type).with("x_trust_ref", extra.clone()))
            .then_records(event_type)
            .with_field("x_trust_ref", &extra);
    }
}

#[test]
fn unknown_fields_inside_the_author_are_kept() {
    let author = json!({"name": "Jo Bloggs", "contact": "jo@example.org", "pronouns": "they"});
    given(&[])
        .when(received().with("author", author.clone()))
        .then_records(EventType::FeedbackReceived)
        .with_field("author", &author);
}

#[test]
fn the_decided_event_is_the_command_data_unchanged() {
    let data = acknowledged().with("channel_ref", json!("sms-42")).data;
    let recorded = given(&[received()])
        .when(Step::raw(EventType::Acknowledged, data.clone()))
        .then_records(EventType::Acknowledged);
    assert_eq!(Value::Object(recorded.data()), data);
}
