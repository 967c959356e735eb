//! What the demo's people say and what its services do about it: the places and the kind of
//! service each is, the stories (each about one theme, fitting the settings where it could
//! have been told), the changes and honest no-changes that answer each theme, and the
//! community tags with the rate at which each setting hears from them.
//!
//! The tables are written to read true together: a story about noise at night on a ward is
//! answered by a change to the ward's nights, never by one about parking. Some stories name
//! staff ("Nurse Priya") or relatives ("my husband Dave"), which the redaction of the public
//! page does not catch: those carry the text a moderator would approve instead, so the demo
//! shows both the redaction and the moderation path.

/// The kind of service a place is; it decides which stories, changes and tags fit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// An adult inpatient ward.
    Ward,
    /// A maternity unit.
    Maternity,
    /// A children's ward.
    Children,
    /// An emergency department.
    Emergency,
    /// An outpatient clinic or day unit.
    Clinic,
    /// District nurses visiting people at home.
    DistrictNursing,
    /// Health visitors seeing families with babies and young children.
    HealthVisiting,
    /// A community mental health team.
    MentalHealth,
}

impl Setting {
    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of settings. The tables write them as masks of the constants below
/// (`WARD | MATERNITY`), which their constructors wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings(u8);

impl Settings {
    /// Whether `setting` is one of these.
    pub const fn has(self, setting: Setting) -> bool {
        self.0 & setting.bit() != 0
    }
}

const WARD: u8 = Setting::Ward.bit();
const MATERNITY: u8 = Setting::Maternity.bit();
const CHILDREN: u8 = Setting::Children.bit();
const EMERGENCY: u8 = Setting::Emergency.bit();
const CLINIC: u8 = Setting::Clinic.bit();
const DISTRICT_NURSING: u8 = Setting::DistrictNursing.bit();
const HEALTH_VISITING: u8 = Setting::HealthVisiting.bit();
const MENTAL_HEALTH: u8 = Setting::MentalHealth.bit();
/// The three kinds of inpatient ward.
const INPATIENT: u8 = WARD | MATERNITY | CHILDREN;
/// The services that see people at home or in the community.
const COMMUNITY: u8 = DISTRICT_NURSING | HEALTH_VISITING | MENTAL_HEALTH;
/// Everywhere.
const ANY: u8 = u8::MAX;

/// A place of the demo: its org unit, the kind of service it is, and how much feedback it
/// gets relative to the others.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// Its org unit (named in `demo-places.txt`).
    pub org_unit: &'static str,
    /// The kind of service.
    pub setting: Setting,
    /// Its share of the feedback, relative to the other places.
    pub weight: u32,
}

const fn place(org_unit: &'static str, setting: Setting, weight: u32) -> Place {
    Place {
        org_unit,
        setting,
        weight,
    }
}

/// The places feedback comes from.
pub const PLACES: &[Place] = &[
    place("rxx/royal-infirmary/ward-7", Setting::Ward, 6),
    place("rxx/royal-infirmary/ward-9", Setting::Ward, 6),
    place("rxx/royal-infirmary/maternity", Setting::Maternity, 7),
    place("rxx/royal-infirmary/emergency", Setting::Emergency, 10),
    place("rxx/general-hospital/ward-2", Setting::Ward, 5),
    place("rxx/general-hospital/outpatients", Setting::Clinic, 9),
    place("rxx/general-hospital/day-surgery", Setting::Clinic, 4),
    place("ryy/city-hospital/ward-12", Setting::Ward, 5),
    place("ryy/city-hospital/children", Setting::Children, 5),
    place("ryy/city-hospital/emergency", Setting::Emergency, 9),
    place("ryy/north-clinic/physiotherapy", Setting::Clinic, 4),
    place("ryy/north-clinic/diabetes", Setting::Clinic, 4),
    place(
        "rzz/community/district-nursing",
        Setting::DistrictNursing,
        5,
    ),
    place("rzz/community/mental-health", Setting::MentalHealth, 5),
    place("rzz/community/health-visiting", Setting::HealthVisiting, 5),
];

/// What feedback is about. Each theme's name is what the log records and the pages show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Theme {
    WaitingTimes,
    Communication,
    NoiseAtNight,
    Food,
    Parking,
    StaffAttitude,
    Cleanliness,
    Discharge,
    PainManagement,
    Accessibility,
    Appointments,
}

impl Theme {
    /// The theme as the log records it.
    pub const fn name(self) -> &'static str {
        match self {
            Theme::WaitingTimes => "waiting times",
            Theme::Communication => "communication",
            Theme::NoiseAtNight => "noise at night",
            Theme::Food => "food",
            Theme::Parking => "parking",
            Theme::StaffAttitude => "staff attitude",
            Theme::Cleanliness => "cleanliness",
            Theme::Discharge => "discharge",
            Theme::PainManagement => "pain management",
            Theme::Accessibility => "accessibility",
            Theme::Appointments => "appointments",
        }
    }
}

/// How a story feels about the service; it sets the Friends and Family Test answer and
/// whether anything needs to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Thanks: nothing needs to change.
    Praise,
    /// Some good, some bad.
    Mixed,
    /// Something went wrong.
    Complaint,
}

/// A community whose voice services seldom hear, as the log tags it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Homeless,
    GypsyRomaTraveller,
    AsylumSeeker,
    LearningDisability,
    DeafBsl,
    YoungCarer,
}

impl Community {
    /// Every community.
    pub const ALL: [Community; 6] = [
        Community::Homeless,
        Community::GypsyRomaTraveller,
        Community::AsylumSeeker,
        Community::LearningDisability,
        Community::DeafBsl,
        Community::YoungCarer,
    ];

    /// The tag the log records.
    pub const fn tag(self) -> &'static str {
        match self {
            Community::Homeless => "homeless",
            Community::GypsyRomaTraveller => "gypsy_roma_traveller",
            Community::AsylumSeeker => "asylum_seeker",
            Community::LearningDisability => "learning_disability",
            Community::DeafBsl => "deaf_bsl",
            Community::YoungCarer => "young_carer",
        }
    }

    /// The chance that one piece of feedback given in `setting` comes from this community.
    /// The rates are low, as they are in life; Gypsy, Roma and Traveller voices are the
    /// rarest, so the insights page shows "fewer than 10" for them.
    pub fn rate(self, setting: Setting) -> f64 {
        use Setting as S;
        match (self, setting) {
            (Community::Homeless, S::Emergency) => 0.04,
            (Community::Homeless, S::MentalHealth) => 0.03,
            (Community::Homeless, _) => 0.004,
            (Community::GypsyRomaTraveller, S::Emergency | S::HealthVisiting) => 0.002,
            (Community::GypsyRomaTraveller, _) => 0.0005,
            (Community::AsylumSeeker, S::Maternity | S::HealthVisiting) => 0.035,
            (Community::AsylumSeeker, S::MentalHealth) => 0.025,
            (Community::AsylumSeeker, _) => 0.003,
            (Community::LearningDisability, _) => 0.02,
            (Community::DeafBsl, _) => 0.008,
            (Community::YoungCarer, S::Children | S::DistrictNursing | S::MentalHealth) => 0.015,
            (Community::YoungCarer, _) => 0.001,
        }
    }
}

/// One piece of feedback as a patient or carer wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Story {
    /// What it is mostly about: the theme of the change that answers it.
    pub theme: Theme,
    /// What else it touches on, as staff would code it.
    pub also: &'static [Theme],
    /// Where it could have been told.
    pub settings: Settings,
    /// How it feels about the service.
    pub tone: Tone,
    /// When set, only someone of this community tells it.
    pub community: Option<Community>,
    /// The story.
    pub text: &'static str,
    /// The staff and relatives it names, which the public page's redaction does not catch.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the tests check the moderated text leaves them out"
        )
    )]
    pub names: &'static [&'static str],
    /// What a moderator approves for the public page instead, without those names; `None`
    /// when the story names no one.
    pub moderated: Option<&'static str>,
    /// The keys of the changes that answer it; empty when any change of its theme does (a
    /// story as short as "Too noisy to sleep").
    pub answered_by: &'static [&'static str],
}

const fn story(theme: Theme, settings: u8, tone: Tone, text: &'static str) -> Story {
    Story {
        theme,
        also: &[],
        settings: Settings(settings),
        tone,
        community: None,
        text,
        names: &[],
        moderated: None,
        answered_by: &[],
    }
}

impl Story {
    /// This story, told only by someone of `community`.
    const fn from(self, community: Community) -> Story {
        Story {
            community: Some(community),
            ..self
        }
    }

    /// This story, touching on these themes too.
    const fn also(self, themes: &'static [Theme]) -> Story {
        Story {
            also: themes,
            ..self
        }
    }

    /// This story, answered by the changes of these keys.
    const fn answered_by(self, keys: &'static [&'static str]) -> Story {
        Story {
            answered_by: keys,
            ..self
        }
    }

    /// This story, naming `names`; a moderator publishes `moderated` instead.
    const fn naming(self, names: &'static [&'static str], moderated: &'static str) -> Story {
        Story {
            names,
            moderated: Some(moderated),
            ..self
        }
    }
}

use Theme as T;
use Tone::{Complaint, Mixed, Praise};

/// The stories.
pub const STORIES: &[Story] = &[
    // Noise at night.
    story(
        T::NoiseAtNight,
        WARD,
        Complaint,
        "The ward was so noisy at night I hardly slept for four nights. Bins banging, phones going off and staff chatting at the desk until 2am.",
    )
    .answered_by(&["quiet-equipment", "earplugs"]),
    story(T::NoiseAtNight, INPATIENT, Complaint, "Too noisy to sleep."),
    story(
        T::NoiseAtNight,
        WARD,
        Mixed,
        "The night staff were kind but the ward was so noisy I could not sleep. My husband Dave brought earplugs in for me in the end.",
    )
    .naming(
        &["Dave"],
        "The night staff were kind but the ward was so noisy I could not sleep. My husband brought earplugs in for me in the end.",
    )
    .answered_by(&["quiet-equipment", "grouped-checks"]),
    story(
        T::NoiseAtNight,
        MATERNITY,
        Complaint,
        "I had just had my baby and needed to rest, but the main lights were on all night and the buzzers never stopped. By the third night I was in tears.",
    )
    .answered_by(&["quiet-hours", "quiet-equipment"]),
    story(
        T::NoiseAtNight,
        CHILDREN,
        Complaint,
        "My daughter is 6 and was woken every hour by the pump next to her bed beeping. Nobody came to silence it. She was exhausted and so was I.",
    )
    .answered_by(&["pump-alarms"]),
    // Food.
    story(
        T::Food,
        WARD | MATERNITY,
        Complaint,
        "The food was cold every evening and the menu never changed.",
    )
    .answered_by(&["hot-trolleys", "weekly-menu"]),
    story(
        T::Food,
        WARD,
        Complaint,
        "Dad is 88 and can't open packets or cut up meat. His tray was put down and taken away untouched three days running. Nobody noticed he wasn't eating until my sister Karen asked.",
    )
    .naming(
        &["Karen"],
        "Dad is 88 and can't open packets or cut up meat. His tray was put down and taken away untouched three days running. Nobody noticed he wasn't eating until my sister asked.",
    )
    .answered_by(&["red-trays"]),
    story(
        T::Food,
        WARD,
        Mixed,
        "Lovely staff. The food was awful though, the jacket potato was still hard in the middle.",
    )
    .also(&[T::StaffAttitude])
    .answered_by(&["hot-trolleys"]),
    story(
        T::Food,
        MATERNITY,
        Complaint,
        "After 20 hours in labour I was starving and was told the kitchen had closed. A midwife found me some toast from the staff room, bless her, but there should be something.",
    )
    .answered_by(&["night-snacks"]),
    story(
        T::Food,
        CHILDREN,
        Complaint,
        "Tea on the children's ward is only at 5pm. My son was in theatre then, and when he woke up hungry all they had was a cheese sandwich he wouldn't eat.",
    )
    .answered_by(&["kids-menu-all-day"]),
    // Discharge.
    story(
        T::Discharge,
        WARD,
        Complaint,
        "I was discharged at 11 at night with no way of getting home. I sat in the entrance until my neighbour could come for me.",
    )
    .answered_by(&["no-late-discharge", "discharge-lounge"]),
    story(
        T::Discharge,
        WARD,
        Complaint,
        "Told at 9am I was going home. I finally left at 6pm because the tablets weren't ready from pharmacy. The whole day sat in a chair waiting.",
    )
    .answered_by(&["medicines-day-before"]),
    story(
        T::Discharge,
        WARD,
        Mixed,
        "Dr Okafor listened to me and my mum, and we felt part of the decisions. But nobody told us what to do once we got home, and we had to ring the ward twice.",
    )
    .naming(
        &["Okafor"],
        "The doctor listened to me and my mum, and we felt part of the decisions. But nobody told us what to do once we got home, and we had to ring the ward twice.",
    )
    .also(&[T::Communication])
    .answered_by(&["discharge-plan"]),
    story(
        T::Discharge,
        MATERNITY,
        Complaint,
        "I was sent home the day after my caesarean without anyone showing me how to look after the wound. I ended up ringing my GP.",
    )
    .answered_by(&["discharge-plan"]),
    story(
        T::Discharge,
        WARD,
        Complaint,
        "My brother Tom has a learning disability. He was sent home with a bag of tablets and a letter he can't read, and nobody rang me, his carer, to explain any of it.",
    )
    .from(Community::LearningDisability)
    .naming(
        &["Tom"],
        "My brother has a learning disability. He was sent home with a bag of tablets and a letter he can't read, and nobody rang me, his carer, to explain any of it.",
    )
    .also(&[T::Communication])
    .answered_by(&["discharge-plan"]),
    // Pain management.
    story(
        T::PainManagement,
        WARD,
        Complaint,
        "My pain relief was late again and again. I pressed the buzzer and waited 50 minutes each time.",
    )
    .answered_by(&["pain-30-minutes"]),
    story(
        T::PainManagement,
        EMERGENCY,
        Complaint,
        "I had a broken wrist and sat in the waiting room for three hours without so much as a paracetamol.",
    )
    .also(&[T::WaitingTimes])
    .answered_by(&["triage-pain-relief"]),
    story(
        T::PainManagement,
        MATERNITY,
        Mixed,
        "The midwives were brilliant, but I asked for an epidural for four hours before the anaesthetist came.",
    )
    .answered_by(&["epidural-30-minutes"]),
    story(
        T::PainManagement,
        CHILDREN,
        Mixed,
        "Nurse Priya was wonderful with my son, but the cannula took five goes and nobody offered numbing cream first.",
    )
    .naming(
        &["Priya"],
        "The nurse was wonderful with my son, but the cannula took five goes and nobody offered numbing cream first.",
    )
    .also(&[T::StaffAttitude])
    .answered_by(&["numbing-cream"]),
    story(
        T::PainManagement,
        WARD,
        Complaint,
        "After my operation I was in agony all night. The nurse said a doctor had to write up stronger painkillers, and no doctor came until the morning round.",
    )
    .answered_by(&["theatre-pain-plan"]),
    // Cleanliness.
    story(
        T::Cleanliness,
        INPATIENT,
        Complaint,
        "The toilets on the ward were not cleaned for two days.",
    )
    .answered_by(&["toilets-4-hours"]),
    story(
        T::Cleanliness,
        EMERGENCY,
        Complaint,
        "There was blood on the floor of the cubicle when they put us in it. My wife had to ask twice before anyone cleaned it.",
    )
    .answered_by(&["named-cleaner"]),
    story(
        T::Cleanliness,
        CLINIC,
        Complaint,
        "The waiting room chairs were sticky and the bin was overflowing.",
    )
    .answered_by(&["waiting-area-cleaning"]),
    story(
        T::Cleanliness,
        WARD,
        Mixed,
        "Staff were run off their feet but lovely. The shower room was dirty all week, hair in the plughole and a smell.",
    )
    .answered_by(&["toilets-4-hours"]),
    // Waiting times.
    story(
        T::WaitingTimes,
        EMERGENCY,
        Complaint,
        "I waited four hours in the emergency department with nobody telling me what was happening.",
    )
    .also(&[T::Communication])
    .answered_by(&["wait-screen"]),
    story(
        T::WaitingTimes,
        EMERGENCY,
        Complaint,
        "Waited 9 hours. Left without being seen.",
    )
    .answered_by(&["wait-screen", "evening-nurse"]),
    story(
        T::WaitingTimes,
        EMERGENCY,
        Mixed,
        "A long wait, five hours, but once we were seen Dr Okafor was brilliant with my dad.",
    )
    .naming(
        &["Okafor"],
        "A long wait, five hours, but once we were seen the doctor was brilliant with my dad.",
    )
    .also(&[T::StaffAttitude])
    .answered_by(&["evening-nurse", "wait-screen"]),
    story(
        T::WaitingTimes,
        CLINIC,
        Complaint,
        "My appointment was at 10:15 and I was seen at 12:40. No one said the clinic was running late, and I had to pay for another two hours of parking.",
    )
    .also(&[T::Parking])
    .answered_by(&["late-clinic-board"]),
    story(
        T::WaitingTimes,
        MENTAL_HEALTH,
        Complaint,
        "I was referred in March and I'm still waiting in September. I've rung three times and nobody can tell me how long it will be.",
    )
    .also(&[T::Communication])
    .answered_by(&["waiting-list-calls"]),
    story(
        T::WaitingTimes,
        CLINIC,
        Complaint,
        "45 minutes late and no apology.",
    )
    .answered_by(&["late-clinic-board", "longer-first-appointments"]),
    // Appointments.
    story(
        T::Appointments,
        CLINIC,
        Complaint,
        "My letter came the day after my appointment. Then I got another letter saying I had not turned up and was being discharged back to my GP.",
    )
    .also(&[T::Communication])
    .answered_by(&["texts-and-email"]),
    story(
        T::Appointments,
        CLINIC | MENTAL_HEALTH,
        Complaint,
        "I spent a whole morning trying to get through to change my appointment. The line just rings out.",
    )
    .answered_by(&["change-by-text"]),
    story(
        T::Appointments,
        DISTRICT_NURSING,
        Complaint,
        "The nurse is meant to come and change Mum's dressing, but we never know when. We wait in all day and some days nobody comes.",
    )
    .answered_by(&["visit-window"]),
    story(
        T::Appointments,
        HEALTH_VISITING,
        Mixed,
        "My health visitor Sarah has been amazing with feeding, but appointments get moved at the last minute and I don't get a text about it.",
    )
    .naming(
        &["Sarah"],
        "My health visitor has been amazing with feeding, but appointments get moved at the last minute and I don't get a text about it.",
    )
    .also(&[T::Communication])
    .answered_by(&["visit-texts"]),
    story(
        T::Appointments,
        MENTAL_HEALTH,
        Complaint,
        "The only appointments are in the middle of the day. I can't keep taking time off work or I'll lose my job.",
    )
    .answered_by(&["evening-appointments"]),
    story(
        T::Appointments,
        DISTRICT_NURSING,
        Complaint,
        "The district nurse didn't turn up for Dad's insulin. When we rang at 4pm we were told she was off sick and nobody had been asked to cover. My husband Dave had to leave work to do it.",
    )
    .naming(
        &["Dave"],
        "The district nurse didn't turn up for Dad's insulin. When we rang at 4pm we were told she was off sick and nobody had been asked to cover. My husband had to leave work to do it.",
    )
    .also(&[T::Communication])
    .answered_by(&["visit-window"]),
    // Parking.
    story(
        T::Parking,
        CLINIC,
        Complaint,
        "I could not find a disabled parking space and missed my appointment.",
    )
    .also(&[T::Accessibility])
    .answered_by(&["blue-badge", "parking-map"]),
    story(
        T::Parking,
        WARD,
        Complaint,
        "Visiting my wife every day for three weeks has cost me over £100 in parking. That's not right.",
    )
    .answered_by(&["free-visitor-parking"]),
    story(
        T::Parking,
        EMERGENCY,
        Complaint,
        "I drove round for 25 minutes looking for a space while my son was bleeding in the back seat. In the end I left the car on the verge and got a ticket.",
    )
    .answered_by(&["drop-off-bay"]),
    story(T::Parking, CLINIC, Complaint, "Parking!!"),
    // Accessibility.
    story(
        T::Accessibility,
        CLINIC,
        Complaint,
        "There was no BSL interpreter at my appointment even though I asked for one when I booked.",
    )
    .from(Community::DeafBsl)
    .answered_by(&["interpreters"]),
    story(
        T::Accessibility,
        EMERGENCY,
        Complaint,
        "I am Deaf. In A&E they called my name out loud and I missed my turn, so I waited another two hours. Nobody thought to come and find me.",
    )
    .from(Community::DeafBsl)
    .also(&[T::WaitingTimes])
    .answered_by(&["how-to-call"]),
    story(
        T::Accessibility,
        CLINIC | MENTAL_HEALTH,
        Complaint,
        "My letter was not in easy read, so I did not know what the appointment was for.",
    )
    .from(Community::LearningDisability)
    .answered_by(&["easy-read"]),
    story(
        T::Accessibility,
        HEALTH_VISITING,
        Complaint,
        "The health visitor came with no interpreter. My English is not good. I did not understand about the baby's vaccines and I was too embarrassed to ask.",
    )
    .from(Community::AsylumSeeker)
    .also(&[T::Communication])
    .answered_by(&["interpreters"]),
    story(
        T::Accessibility,
        CLINIC,
        Complaint,
        "The lift up to the clinic was broken and nobody told us. My mum uses a wheelchair, so we had to go home and book again.",
    )
    .answered_by(&["lift-checks"]),
    // Communication.
    story(
        T::Communication,
        WARD,
        Praise,
        "Nurse Priya explained everything about my medication and made me feel safe.",
    )
    .naming(
        &["Priya"],
        "The nurse explained everything about my medication and made me feel safe.",
    ),
    story(
        T::Communication,
        ANY,
        Complaint,
        "Nobody called me back about my complaint.",
    )
    .answered_by(&["complaint-3-days"]),
    story(
        T::Communication,
        WARD,
        Complaint,
        "Mum was moved to another ward in the night and nobody told us. We turned up at visiting and her bed was empty. For a minute I thought she had died.",
    )
    .answered_by(&["family-line"]),
    story(
        T::Communication,
        EMERGENCY,
        Mixed,
        "Everyone was kind, but we had no idea what we were waiting for. A scan? Results? A doctor? Nobody said.",
    )
    .also(&[T::WaitingTimes])
    .answered_by(&["hourly-updates"]),
    story(
        T::Communication,
        CLINIC,
        Complaint,
        "I'm still waiting for my blood results from six weeks ago. Every time I ring I'm told someone will call me back, and nobody does.",
    )
    .answered_by(&["results-letter"]),
    story(
        T::Communication,
        COMMUNITY,
        Complaint,
        "Every visit it's someone different and I have to explain everything again from the start.",
    )
    .answered_by(&["named-worker"]),
    story(
        T::Communication,
        HEALTH_VISITING,
        Praise,
        "The health visitor came on time and really helped with feeding.",
    ),
    story(
        T::Communication,
        CHILDREN,
        Complaint,
        "I'm 15 and I look after my mum. When my little brother was in, nobody would tell me anything because I'm not an adult, but I'm the one who does his medicines at home.",
    )
    .from(Community::YoungCarer)
    .answered_by(&["young-carers"]),
    story(
        T::Communication,
        MATERNITY,
        Complaint,
        "Three different midwives told me three different things about whether I could go home. Very confusing when you're tired and sore.",
    )
    .also(&[T::Discharge])
    .answered_by(&["named-nurse"]),
    story(
        T::Communication,
        WARD,
        Complaint,
        "My dad was on the ward for 12 days. In that time we spoke to a doctor once, and only because my sister Karen waited by the desk for two hours. We were never told his kidneys were getting worse; when we did find out, it was from the physio. I know everyone is busy, but a five-minute phone call every couple of days would have made all the difference to us. You can reach me on 07700 900461.",
    )
    .naming(
        &["Karen"],
        "My dad was on the ward for 12 days. In that time we spoke to a doctor once, and only because my sister waited by the desk for two hours. We were never told his kidneys were getting worse; when we did find out, it was from the physio. I know everyone is busy, but a five-minute phone call every couple of days would have made all the difference to us.",
    )
    .answered_by(&["family-line"]),
    // Staff attitude.
    story(
        T::StaffAttitude,
        INPATIENT,
        Praise,
        "Every single nurse on the night shift was kind to me. Thank you.",
    ),
    story(
        T::StaffAttitude,
        EMERGENCY,
        Praise,
        "Dr Okafor was calm and kind, and explained exactly what was wrong with my son's arm. Thank you.",
    )
    .naming(
        &["Okafor"],
        "The doctor was calm and kind, and explained exactly what was wrong with my son's arm. Thank you.",
    ),
    story(
        T::StaffAttitude,
        EMERGENCY | CLINIC,
        Complaint,
        "Reception staff were rude when I said I had no fixed address.",
    )
    .from(Community::Homeless)
    .answered_by(&["reception-training"]),
    story(
        T::StaffAttitude,
        CLINIC,
        Complaint,
        "The receptionist rolled her eyes when I said I needed help filling in the form. I felt stupid.",
    )
    .answered_by(&["reception-training"]),
    story(
        T::StaffAttitude,
        DISTRICT_NURSING,
        Praise,
        "The district nurses have been coming to Mum for a year now and they are like family to us. Special thanks to Nurse Grace.",
    )
    .naming(
        &["Grace"],
        "The district nurses have been coming to Mum for a year now and they are like family to us. Special thanks to the nurse who comes most often.",
    ),
    story(
        T::StaffAttitude,
        MENTAL_HEALTH,
        Complaint,
        "The worker I saw made me feel like I was wasting her time. I didn't go back for two months.",
    )
    .answered_by(&["listening-training"]),
    story(
        T::StaffAttitude,
        EMERGENCY,
        Complaint,
        "When I gave our site as my address the nurse's whole manner changed. I was treated like I was going to steal something.",
    )
    .from(Community::GypsyRomaTraveller)
    .answered_by(&["community-training"]),
    story(
        T::StaffAttitude,
        MATERNITY,
        Praise,
        "The midwives on the night shift were amazing. Special thanks to Sister Hughes, who stayed past the end of her shift to help me with feeding.",
    )
    .naming(
        &["Hughes"],
        "The midwives on the night shift were amazing. Special thanks to the midwife who stayed past the end of her shift to help me with feeding.",
    ),
    story(
        T::StaffAttitude,
        MENTAL_HEALTH,
        Complaint,
        "I was asked again and again about my immigration papers before anyone asked how I was feeling. I was scared to come back.",
    )
    .from(Community::AsylumSeeker)
    .answered_by(&["community-training"]),
    story(
        T::StaffAttitude,
        WARD,
        Mixed,
        "Most staff were great. One healthcare assistant was rough when washing my mum, and talked about her as if she wasn't there.",
    )
    .answered_by(&["dignity-training"]),
];

/// A change a service made because of what people told it about a theme.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// What names it among the changes (stories name the changes that answer them by it).
    pub key: &'static str,
    /// The theme it answers.
    pub theme: Theme,
    /// Where it could be made.
    pub settings: Settings,
    /// The action as planned.
    pub plan: &'static str,
    /// Who owns the action.
    pub owner: &'static str,
    /// What changed, as the public page shows it.
    pub done: &'static str,
}

const fn change(
    key: &'static str,
    theme: Theme,
    settings: u8,
    owner: &'static str,
    plan: &'static str,
    done: &'static str,
) -> Change {
    Change {
        key,
        theme,
        settings: Settings(settings),
        plan,
        owner,
        done,
    }
}

/// The changes.
pub const CHANGES: &[Change] = &[
    // Noise at night.
    change(
        "quiet-equipment",
        T::NoiseAtNight,
        INPATIENT,
        "estates",
        "Fit soft-close bins and quiet trolley wheels, and dim the main lights at 22:00.",
        "Soft-close bins and quiet trolley wheels are fitted, and the main lights now dim at 22:00.",
    ),
    change(
        "earplugs",
        T::NoiseAtNight,
        INPATIENT,
        "ward manager",
        "Offer eye masks and earplugs at bedtime, and switch staff phones to vibrate at night.",
        "Eye masks and earplugs are now offered to everyone at bedtime, and staff phones are on vibrate at night.",
    ),
    change(
        "grouped-checks",
        T::NoiseAtNight,
        WARD | CHILDREN,
        "matron",
        "Group night-time checks so patients are woken as little as possible.",
        "Night-time checks are now done together, so patients are woken once rather than three or four times.",
    ),
    change(
        "pump-alarms",
        T::NoiseAtNight,
        WARD | CHILDREN,
        "ward manager",
        "Answer pump alarms within five minutes at night and set pumps to their quietest safe volume.",
        "Pump alarms are now answered within five minutes at night, and pumps are set to their quietest safe volume.",
    ),
    change(
        "quiet-hours",
        T::NoiseAtNight,
        MATERNITY,
        "maternity matron",
        "Agree quiet hours from 22:00 and turn down the door buzzer at night.",
        "Quiet hours start at 22:00 for everyone on the unit, and the door buzzer is turned down at night.",
    ),
    // Food.
    change(
        "hot-trolleys",
        T::Food,
        INPATIENT,
        "catering",
        "Replace the hot food trolleys and check food temperatures at every evening meal.",
        "The hot food trolleys are replaced, and food temperature is checked and written down at every evening meal.",
    ),
    change(
        "weekly-menu",
        T::Food,
        WARD | MATERNITY,
        "catering",
        "Change the evening menu weekly and add a hot vegetarian choice.",
        "The evening menu now changes every week and has a hot vegetarian choice every day.",
    ),
    change(
        "red-trays",
        T::Food,
        WARD,
        "ward manager",
        "Bring back red trays and protected mealtimes, with a helper for anyone who needs one.",
        "Patients who need help to eat now get a red tray and a mealtime helper, and mealtimes are protected again.",
    ),
    change(
        "kids-menu-all-day",
        T::Food,
        CHILDREN,
        "catering",
        "Offer a children's menu all day, not only at set mealtimes.",
        "Children can now order from their menu at any time of day, including after theatre.",
    ),
    change(
        "night-snacks",
        T::Food,
        MATERNITY,
        "catering",
        "Stock snacks and drinks for mothers through the night.",
        "Snacks and hot drinks are now there for mothers all through the night, including after labour.",
    ),
    // Discharge.
    change(
        "no-late-discharge",
        T::Discharge,
        WARD | MATERNITY,
        "patient flow team",
        "Stop discharges after 20:00 unless the patient agrees and has transport home.",
        "Nobody is now sent home after 20:00 unless they agree and have a way of getting home.",
    ),
    change(
        "medicines-day-before",
        T::Discharge,
        WARD,
        "pharmacy",
        "Order medicines to take home the day before discharge.",
        "Medicines to take home are now ordered the day before discharge, so nobody waits all day for pharmacy.",
    ),
    change(
        "discharge-plan",
        T::Discharge,
        WARD | MATERNITY,
        "matron",
        "Give every patient a written discharge plan and talk it through with them and their family.",
        "Everyone now gets a written plan for going home, talked through with them and their family before they leave, with a number to ring.",
    ),
    change(
        "discharge-lounge",
        T::Discharge,
        WARD,
        "estates",
        "Open a discharge lounge with seats, drinks and a television.",
        "A discharge lounge with seats, drinks and a television has opened, so nobody waits for transport in a corridor.",
    ),
    // Pain management.
    change(
        "pain-30-minutes",
        T::PainManagement,
        INPATIENT,
        "matron",
        "Check pain with every set of observations and give pain relief within 30 minutes of a request.",
        "Pain is now checked with every set of observations, and pain relief is given within 30 minutes of being asked for.",
    ),
    change(
        "triage-pain-relief",
        T::PainManagement,
        EMERGENCY,
        "emergency department lead nurse",
        "Offer pain relief at triage.",
        "Pain relief is now offered at triage, before the wait to see a doctor.",
    ),
    change(
        "epidural-30-minutes",
        T::PainManagement,
        MATERNITY,
        "maternity matron",
        "Escalate every epidural request to the anaesthetist within 30 minutes.",
        "Every request for an epidural now goes to the anaesthetist within 30 minutes, and you are told how long they will be.",
    ),
    change(
        "numbing-cream",
        T::PainManagement,
        CHILDREN,
        "children's ward sister",
        "Use numbing cream before every needle, with a play specialist there to help.",
        "Numbing cream is now put on before every blood test or cannula, and a play specialist helps children through it.",
    ),
    change(
        "theatre-pain-plan",
        T::PainManagement,
        WARD,
        "matron",
        "Agree pain relief plans before patients come back from theatre.",
        "Stronger painkillers are now written up before patients come back from theatre, so nobody waits for a doctor at night.",
    ),
    // Cleanliness.
    change(
        "toilets-4-hours",
        T::Cleanliness,
        INPATIENT | EMERGENCY | CLINIC,
        "facilities",
        "Clean toilets and bathrooms every four hours, signed on the door.",
        "Toilets and bathrooms are now cleaned every four hours, with a signed check sheet on the door.",
    ),
    change(
        "waiting-area-cleaning",
        T::Cleanliness,
        EMERGENCY | CLINIC,
        "facilities",
        "Clean the waiting areas every two hours and put a number to report spills on the wall.",
        "Waiting areas are now cleaned every two hours, and a number to ring about spills is on the wall.",
    ),
    change(
        "named-cleaner",
        T::Cleanliness,
        INPATIENT | EMERGENCY,
        "facilities",
        "Name a cleaner for each area on every shift, and mark cleaned bed spaces.",
        "Each area now has a named cleaner on every shift, and a bed space or cubicle gets a 'clean' sticker once it is cleaned.",
    ),
    // Waiting times.
    change(
        "wait-screen",
        T::WaitingTimes,
        EMERGENCY,
        "emergency department lead nurse",
        "Put up a waiting-time screen and have a nurse check on everyone waiting every hour.",
        "A screen now shows how long the wait is, and a nurse checks on everyone in the waiting room every hour.",
    ),
    change(
        "evening-nurse",
        T::WaitingTimes,
        EMERGENCY,
        "emergency department manager",
        "Add a nurse to the waiting room in the evenings.",
        "An extra nurse now works in the waiting room in the evenings, when it is busiest.",
    ),
    change(
        "late-clinic-board",
        T::WaitingTimes,
        CLINIC,
        "outpatients manager",
        "Tell patients at check-in how late the clinic is running and update the board every 30 minutes.",
        "You are now told at check-in if the clinic is running late and by how long, and the board is updated every 30 minutes.",
    ),
    change(
        "longer-first-appointments",
        T::WaitingTimes,
        CLINIC,
        "outpatients manager",
        "Allow longer for first appointments when booking clinics.",
        "First appointments are now booked with more time, so clinics run less late.",
    ),
    change(
        "waiting-list-calls",
        T::WaitingTimes,
        MENTAL_HEALTH,
        "team manager",
        "Ring everyone on the waiting list every two weeks and tell them where they are in the queue.",
        "A duty worker now rings everyone on the waiting list every two weeks, tells them where they are in the queue, and checks how they are.",
    ),
    // Appointments.
    change(
        "texts-and-email",
        T::Appointments,
        CLINIC | MENTAL_HEALTH,
        "booking team",
        "Send appointment letters by text and e-mail as well as post, at least two weeks ahead.",
        "Appointments are now sent by text and e-mail as well as by post, at least two weeks ahead.",
    ),
    change(
        "change-by-text",
        T::Appointments,
        CLINIC | MENTAL_HEALTH,
        "booking team",
        "Let people change an appointment by replying to the reminder text.",
        "You can now change your appointment by replying to the reminder text, without ringing the booking line.",
    ),
    change(
        "visit-window",
        T::Appointments,
        DISTRICT_NURSING,
        "district nursing team leader",
        "Give every visit a two-hour window, and ring if the nurse will be late; cover sickness from the morning huddle.",
        "Every visit now has a two-hour window, the nurse rings if they will be late, and visits of anyone off sick are shared out at the morning huddle.",
    ),
    change(
        "visit-texts",
        T::Appointments,
        HEALTH_VISITING,
        "health visiting team leader",
        "Confirm every appointment by text the day before, and text at once if it has to move.",
        "Appointments are now confirmed by text the day before, and you get a text at once if one has to move.",
    ),
    change(
        "evening-appointments",
        T::Appointments,
        MENTAL_HEALTH,
        "team manager",
        "Offer evening appointments twice a week.",
        "Evening appointments are now offered on Tuesdays and Thursdays, for people who work or care during the day.",
    ),
    // Parking.
    change(
        "blue-badge",
        T::Parking,
        WARD | EMERGENCY | CLINIC,
        "estates",
        "Add blue-badge bays by the main entrance and keep the drop-off bay clear.",
        "There are two more blue-badge bays by the main entrance, and the drop-off bay is now kept clear.",
    ),
    change(
        "free-visitor-parking",
        T::Parking,
        WARD,
        "estates",
        "Make parking free for visitors of patients staying more than a week.",
        "Parking is now free for close family visiting someone who has been in for more than a week: ask the ward for a pass.",
    ),
    change(
        "drop-off-bay",
        T::Parking,
        EMERGENCY,
        "estates",
        "Mark a 30-minute drop-off bay at the emergency department entrance.",
        "There is now a 30-minute drop-off bay right by the emergency department entrance.",
    ),
    change(
        "parking-map",
        T::Parking,
        CLINIC,
        "booking team",
        "Put a map of the car parks and bus stops in every appointment letter.",
        "Appointment letters now have a map of the car parks, the blue-badge bays and the nearest bus stops.",
    ),
    // Accessibility.
    change(
        "interpreters",
        T::Accessibility,
        CLINIC | EMERGENCY | HEALTH_VISITING | MENTAL_HEALTH,
        "interpreting service",
        "Book interpreters (BSL and spoken languages) when the appointment is made, and show it on the clinic list.",
        "Interpreters, BSL and spoken languages, are now booked when the appointment is made, and the booking shows on the staff's list.",
    ),
    change(
        "easy-read",
        T::Accessibility,
        CLINIC | MENTAL_HEALTH,
        "learning disability liaison nurse",
        "Send easy-read letters to everyone who asks, and keep the request on their record.",
        "Easy-read letters now go to everyone who asks for them, and the request stays on their record for next time.",
    ),
    change(
        "how-to-call",
        T::Accessibility,
        EMERGENCY,
        "emergency department manager",
        "Ask everyone how they would like to be called when their turn comes.",
        "Everyone is now asked at check-in how they want to be called when it is their turn: by name, on a screen, or in person.",
    ),
    change(
        "lift-checks",
        T::Accessibility,
        CLINIC,
        "estates",
        "Check the lifts every morning and text patients when one is out of order.",
        "Lifts are now checked every morning, and patients booked upstairs get a text and a ground-floor room when one is out of order.",
    ),
    // Communication.
    change(
        "named-nurse",
        T::Communication,
        INPATIENT,
        "matron",
        "Write each patient's named nurse for the shift on the board by the bed.",
        "Every patient now has a named nurse each shift, written on the board by their bed.",
    ),
    change(
        "family-line",
        T::Communication,
        INPATIENT | EMERGENCY,
        "patient experience team",
        "Set up a phone line for families, staffed 10:00 to 20:00.",
        "Families can now ring a phone line staffed from 10:00 to 20:00 for news, with the patient's agreement, and are rung when a patient moves ward.",
    ),
    change(
        "hourly-updates",
        T::Communication,
        EMERGENCY,
        "emergency department lead nurse",
        "Tell everyone waiting what is happening at least every hour.",
        "A nurse now tells everyone waiting what they are waiting for, and how long it may be, at least every hour.",
    ),
    change(
        "results-letter",
        T::Communication,
        CLINIC,
        "outpatients manager",
        "Send test results by letter within two weeks, with a number to ring.",
        "Test results are now sent by letter within two weeks, with a number to ring if anything is unclear.",
    ),
    change(
        "named-worker",
        T::Communication,
        COMMUNITY,
        "team leader",
        "Give everyone a named worker and a direct number.",
        "Everyone now has a named worker and a card with their direct number, answered from 09:00 to 17:00.",
    ),
    change(
        "complaint-3-days",
        T::Communication,
        ANY,
        "patient experience team",
        "Answer every complaint within three working days, and say who is dealing with it.",
        "Every complaint is now answered within three working days by a named person, who keeps you told until it is closed.",
    ),
    change(
        "young-carers",
        T::Communication,
        CHILDREN,
        "children's ward sister",
        "Ask every family who helps with care at home, and include young carers in the updates.",
        "Every family is now asked who helps with care at home, and young carers are included in updates and shown the medicines.",
    ),
    // Staff attitude.
    change(
        "reception-training",
        T::StaffAttitude,
        EMERGENCY | CLINIC,
        "patient experience team",
        "Train reception staff in treating everyone with respect, with people who have been homeless, and offer help with forms.",
        "Reception staff have been trained in treating everyone with respect, in sessions run with people who have been homeless, and now offer help with forms to anyone who wants it.",
    ),
    change(
        "dignity-training",
        T::StaffAttitude,
        INPATIENT,
        "matron",
        "Use this story in the team's dignity training.",
        "The team has talked through this experience together, and it is now part of the ward's training on dignity in personal care.",
    ),
    change(
        "listening-training",
        T::StaffAttitude,
        MENTAL_HEALTH,
        "team manager",
        "Train the team in listening without judgement, with people who use the service.",
        "The whole team has had training in listening without judgement, led by people who use the service.",
    ),
    change(
        "community-training",
        T::StaffAttitude,
        EMERGENCY | MENTAL_HEALTH,
        "patient experience team",
        "Train staff in the care of Gypsy, Roma and Traveller people and of people seeking asylum, with community groups.",
        "Staff have been trained with local community groups in caring for Gypsy, Roma and Traveller people and people seeking asylum, and immigration questions are no longer asked at first contact.",
    ),
];

/// Why nothing could change about a theme: honest reasons, each fitting some settings.
#[derive(Debug, Clone, Copy)]
pub struct NoChange {
    /// The theme it answers.
    pub theme: Theme,
    /// Where it could be said.
    pub settings: Settings,
    /// The reason.
    pub reason: &'static str,
}

const fn no_change(theme: Theme, settings: u8, reason: &'static str) -> NoChange {
    NoChange {
        theme,
        settings: Settings(settings),
        reason,
    }
}

/// The no-changes for complaints and mixed feedback.
pub const NO_CHANGES: &[NoChange] = &[
    no_change(
        T::NoiseAtNight,
        INPATIENT,
        "People who are very ill are admitted at night and we cannot stop that; we have explained why and offered earplugs.",
    ),
    no_change(
        T::Food,
        INPATIENT,
        "Our meals come from a regional kitchen under a contract that runs until 2027; we have passed your comments to the contract review.",
    ),
    no_change(
        T::Discharge,
        WARD | MATERNITY,
        "We are sorry. We looked into it: the delay came from a shortage of beds and staff that day, which we cannot fix quickly, and we have explained what happened.",
    ),
    no_change(
        T::PainManagement,
        INPATIENT | EMERGENCY,
        "We are sorry. We looked into it: staff were caring for a very ill patient at the time, which delayed your pain relief, and we have explained what happened.",
    ),
    no_change(
        T::Cleanliness,
        INPATIENT | EMERGENCY | CLINIC,
        "The cleaning records and the audit for that week show no gaps; we will keep checking, and thank you for telling us.",
    ),
    no_change(
        T::WaitingTimes,
        EMERGENCY,
        "People are seen in order of need, not of arrival, as national guidance requires; we have explained how triage works.",
    ),
    no_change(
        T::WaitingTimes,
        CLINIC,
        "The wait is set by how many consultants we have; two posts are advertised, and we have written to explain.",
    ),
    no_change(
        T::WaitingTimes,
        MENTAL_HEALTH,
        "Referrals have doubled and we cannot shorten the list quickly; we have told you how to get help while you wait.",
    ),
    no_change(
        T::Appointments,
        CLINIC | MENTAL_HEALTH,
        "We are sorry. Appointments are booked through a national system we cannot change; we have raised your experience with its supplier.",
    ),
    no_change(
        T::Appointments,
        DISTRICT_NURSING | HEALTH_VISITING,
        "Visits are planned each morning by who needs care most, so we cannot promise set times; we have explained this, and why.",
    ),
    no_change(
        T::Parking,
        WARD | EMERGENCY | CLINIC,
        "The car park belongs to the council; we have passed your feedback on to them.",
    ),
    no_change(
        T::Accessibility,
        ANY,
        "We are sorry. Putting this right needs money we do not have this year; it is on the list for next year's budget, and we will write to you when it is agreed.",
    ),
    no_change(
        T::Communication,
        ANY,
        "We looked into what happened; the information was given, but not in a way that helped, and we have apologised and talked it through with you.",
    ),
    no_change(
        T::StaffAttitude,
        ANY,
        "We spoke with the staff member involved; that is handled privately, so there is no wider change to report.",
    ),
];

/// Why nothing changed after praise.
pub const THANKS_PASSED_ON: &[&str] = &[
    "Nothing needed to change: we passed your thanks on to the team, and they were read out at the staff meeting.",
    "Nothing needed to change: your thanks went to the staff you named and to their manager.",
];

/// What the service replied, by tone.
pub const fn reply(tone: Tone) -> &'static str {
    match tone {
        Praise => "Thank you for your kind words; we have shared them with the team.",
        Mixed => {
            "Thank you for telling us. We are glad some of it went well and sorry about the rest; we are looking into it with the team."
        }
        Complaint => {
            "Thank you for telling us, and we are sorry. We are looking into it with the team and will tell you what we do about it."
        }
    }
}

/// Why a closed loop was opened again.
pub const REOPEN_REASONS: &[&str] = &[
    "They wrote again: it happened again the following week.",
    "They rang to say the change has not made a difference for them.",
];

/// The changes that answer `theme` in `setting`.
pub fn changes_for(theme: Theme, setting: Setting) -> impl Iterator<Item = &'static Change> {
    CHANGES
        .iter()
        .filter(move |change| change.theme == theme && change.settings.has(setting))
}

/// The no-changes that answer `theme` in `setting`.
pub fn no_changes_for(theme: Theme, setting: Setting) -> impl Iterator<Item = &'static NoChange> {
    NO_CHANGES
        .iter()
        .filter(move |reason| reason.theme == theme && reason.settings.has(setting))
}

/// The theme a change description answers, when it is one of [`CHANGES`].
#[cfg(test)]
pub fn theme_of_change(done: &str) -> Option<Theme> {
    CHANGES
        .iter()
        .find(|change| change.done == done)
        .map(|change| change.theme)
}
