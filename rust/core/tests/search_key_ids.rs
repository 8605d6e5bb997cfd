//! Search key ids are derived from each index's definition: the same in every engine,
//! whatever the registration order, and a collision between two indexes is refused.

use std::collections::HashMap;

use reactive_core::catalog::Catalog;
use reactive_core::engine::{Engine, EngineConfig};
use reactive_core::error::Error;
use reactive_core::log::recovery::LoadedState;
use reactive_core::mvcc::MvccStore;
use reactive_core::search::{self, KEY_ID_BASE};
use reactive_core::timestamp::Timestamp;

fn engine_with(tables: &[&str]) -> Engine {
    let state = LoadedState {
        catalog: Catalog::new(),
        store: MvccStore::new(),
        max_ts: Timestamp(0),
        commits: 0,
        revisions: 0,
    };
    let engine = Engine::new(state, EngineConfig::default());
    for table in tables {
        engine.create_table(table).unwrap();
    }
    engine
}

fn text_id(engine: &Engine, table: &str, name: &str) -> u32 {
    engine
        .search()
        .current()
        .1
        .text(table, name)
        .unwrap()
        .def
        .key_id
}

fn vector_id(engine: &Engine, table: &str, name: &str) -> u32 {
    engine
        .search()
        .current()
        .1
        .vector(table, name)
        .unwrap()
        .def
        .key_id
}

fn filters(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn register_a(engine: &Engine) {
    engine
        .register_text_index("messages", "a", "body", &filters(&["channel"]))
        .unwrap();
}

fn register_b(engine: &Engine) {
    engine
        .register_vector_index("docs", "b", "embedding", 4, &[], 100)
        .unwrap();
}

fn register_c(engine: &Engine) {
    engine
        .register_text_index("docs", "c", "title", &[])
        .unwrap();
}

#[test]
fn registration_order_does_not_matter() {
    let first = engine_with(&["messages", "docs"]);
    register_a(&first);
    register_b(&first);
    register_c(&first);
    let second = engine_with(&["docs", "messages"]);
    register_c(&second);
    register_b(&second);
    register_a(&second);
    for engine in [&first, &second] {
        assert_eq!(
            text_id(engine, "messages", "a"),
            search::text_key_id("messages", "a", "body", &filters(&["channel"]))
        );
        assert_eq!(
            vector_id(engine, "docs", "b"),
            search::vector_key_id("docs", "b", "embedding", 4, &[])
        );
        assert_eq!(
            text_id(engine, "docs", "c"),
            search::text_key_id("docs", "c", "title", &[])
        );
    }
    let ids = [
        text_id(&first, "messages", "a"),
        vector_id(&first, "docs", "b"),
        text_id(&first, "docs", "c"),
    ];
    assert!(
        ids.iter()
            .all(|id| *id >= KEY_ID_BASE && search::is_search_key_id(*id))
    );
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[1], ids[2]);
}

#[test]
fn re_registering_drop_and_re_add_keep_the_id() {
    let engine = engine_with(&["messages", "docs"]);
    register_a(&engine);
    register_b(&engine);
    let (a, b) = (
        text_id(&engine, "messages", "a"),
        vector_id(&engine, "docs", "b"),
    );
    let index = std::sync::Arc::clone(engine.search().current().1.text("messages", "a").unwrap());
    register_a(&engine);
    // The same definition stays as it was: the same index, the same id.
    let again = engine
        .search()
        .current()
        .1
        .text("messages", "a")
        .cloned()
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&index, &again));
    // exact_limit is a per-process setting: the index is rebuilt but keeps its id.
    engine
        .register_vector_index("docs", "b", "embedding", 4, &[], 7)
        .unwrap();
    assert_eq!(vector_id(&engine, "docs", "b"), b);
    // Dropped, then added again.
    engine.retain_search_indexes(&[("docs".to_owned(), "b".to_owned())]);
    assert!(engine.search().current().1.text("messages", "a").is_none());
    register_a(&engine);
    assert_eq!(text_id(&engine, "messages", "a"), a);
    // Another shape under the same name replaces the index, with another id.
    engine
        .register_text_index("messages", "a", "body", &[])
        .unwrap();
    assert_ne!(text_id(&engine, "messages", "a"), a);
    assert_eq!(engine.search().current().1.text.len(), 1);
}

/// Two index names of one table whose text key ids collide, found by brute force (about
/// 15,000 names are expected before the first collision among 2^27 ids).
fn colliding_names() -> (String, String) {
    let mut seen: HashMap<u32, String> = HashMap::new();
    for i in 0..1_000_000 {
        let name = format!("i{i}");
        let id = search::text_key_id("messages", &name, "body", &[]);
        if let Some(first) = seen.insert(id, name.clone()) {
            return (first, name);
        }
    }
    panic!("no collision among a million names");
}

#[test]
fn a_collision_is_refused_naming_both_indexes() {
    let (first, second) = colliding_names();
    let engine = engine_with(&["messages"]);
    engine
        .register_text_index("messages", &first, "body", &[])
        .unwrap();
    let id = text_id(&engine, "messages", &first);
    let err = engine
        .register_text_index("messages", &second, "body", &[])
        .unwrap_err();
    let Error::Schema(schema) = &err else {
        panic!("expected a schema error, got {err:?}");
    };
    assert!(
        schema.message.contains(&format!("messages.{first}"))
            && schema.message.contains(&format!("messages.{second}"))
            && schema.message.contains(&format!("{id:#010x}")),
        "{}",
        schema.message
    );
    // Nothing changed: the first keeps its id, the second is not registered.
    let (_, registry) = engine.search().current();
    assert_eq!(registry.text.len(), 1);
    assert_eq!(text_id(&engine, "messages", &first), id);
    assert!(registry.text("messages", &second).is_none());
    // Re-registering the first one (same definition) is still fine.
    engine
        .register_text_index("messages", &first, "body", &[])
        .unwrap();
    // Once the first is dropped, the second can have the id.
    engine.retain_search_indexes(&[]);
    engine
        .register_text_index("messages", &second, "body", &[])
        .unwrap();
    assert_eq!(text_id(&engine, "messages", &second), id);
}
