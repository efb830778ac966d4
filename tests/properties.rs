//! Property tests over the parsers that take untrusted input: page tokens, ids that become
//! paths, the config file. Any input: no panic, and the documented answer.

use proptest::prelude::*;
use snapcsi::backend::local::Layout;
use snapcsi::config::FileConfig;
use snapcsi::ops::token;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_token_is_decoded_or_refused_with_aborted(raw in ".{0,200}") {
        match token::decode(&raw) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.code(), tonic::Code::Aborted),
        }
    }

    #[test]
    fn every_cursor_round_trips(cursor in ".{1,200}") {
        prop_assert_eq!(token::decode(&token::encode(&cursor)).expect("own token"), Some(cursor));
    }

    #[test]
    fn ids_never_escape_the_data_directory(id in "(vol-|snap-)?[a-f0-9./-]{0,60}") {
        let layout = Layout::new("/data");
        for path in [layout.volume_image(&id), layout.snapshot_image(&id), layout.staged_marker(&id)]
            .into_iter()
            .flatten()
        {
            prop_assert!(!path.to_string_lossy().contains(".."), "{}", path.display());
            prop_assert_eq!(path.components().count(), 4, "{}", path.display());
        }
    }

    #[test]
    fn any_config_text_parses_or_names_a_key(text in "[\\[\\]a-z_.=\"0-9 \n-]{0,300}") {
        if let Err(e) = FileConfig::parse("fuzz.toml", &text) {
            prop_assert!(!e.key.is_empty());
            prop_assert!(e.to_string().starts_with("config fuzz.toml: "));
        }
    }
}
