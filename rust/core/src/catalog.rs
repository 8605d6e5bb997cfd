//! The catalog: tables, their numbers, and their indexes.
//!
//! Every table has two built-in indexes, `by_id` (`[_id]`) and `by_creation_time`
//! (`[_creationTime, _id]`); a user index on fields `[f1, ..., fn]` indexes
//! `[f1, ..., fn, _creationTime, _id]` (spec §12), so every index key names one document.
//!
//! Invariants: table numbers and index ids are never reused (the counters only grow, so an
//! id in persistence always means one thing); names are unique per scope. The catalog is
//! persisted as JSON (`globals.catalog`) and replaced whole, under the engine's catalog lock,
//! only at open (schema changes) and when a table is first created.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, SchemaError};
use crate::id::TableNumber;
use crate::limits;
use crate::value::FieldPath;

/// Names one index; the first 4 bytes (big-endian) of its keyspace keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IndexId(pub u32);

impl IndexId {
    /// The 4-byte prefix of this index's keys in the keyspace.
    pub fn prefix(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// Read the index id from a keyspace key.
    pub fn of_key(key: &[u8]) -> Option<IndexId> {
        let b: [u8; 4] = key.get(..4)?.try_into().ok()?;
        Some(IndexId(u32::from_be_bytes(b)))
    }
}

impl fmt::Display for IndexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether an index can serve reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexState {
    /// Commits maintain it, but documents written before it existed are still being added;
    /// queries on it get [`Error::IndexNotReady`].
    Backfilling,
    /// Complete: serves reads at every snapshot at or after `since`.
    Ready {
        /// The first timestamp at which the index is complete.
        since: u64,
    },
}

/// One index of one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDescriptor {
    /// Its id.
    pub id: IndexId,
    /// Its table.
    pub table: u32,
    /// Its name (`by_id`, `by_creation_time` or the schema's name).
    pub name: String,
    /// The user's fields, in order (empty for the built-in indexes).
    pub user_fields: Vec<String>,
    /// Backfilling or ready.
    pub state: IndexState,
    /// The fields the key is made of, system fields appended (derived; not persisted).
    #[serde(skip)]
    pub key_fields: Vec<FieldPath>,
}

impl IndexDescriptor {
    fn derive_key_fields(&mut self) -> Result<(), Error> {
        let mut fields = Vec::with_capacity(self.user_fields.len() + 2);
        for f in &self.user_fields {
            fields.push(FieldPath::parse(f).map_err(|e| {
                Error::Schema(SchemaError::new(format!("index {}: {e}", self.name)))
            })?);
        }
        if self.name != BY_ID {
            fields.push(FieldPath::parse("_creationTime").map_err(Error::from)?);
        }
        fields.push(FieldPath::parse("_id").map_err(Error::from)?);
        self.key_fields = fields;
        Ok(())
    }

    /// Whether the index serves reads at snapshot `ts`.
    pub fn ready_at(&self, ts: u64) -> bool {
        matches!(self.state, IndexState::Ready { since } if since <= ts)
    }
}

/// One table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableDescriptor {
    /// The number its ids carry.
    pub number: u32,
    /// Its name.
    pub name: String,
    /// Its indexes by name.
    pub indexes: BTreeMap<String, IndexId>,
}

/// The numbers a new table will have once a commit creates it: reserved when a transaction
/// first writes to a table that does not exist, installed in the catalog by that
/// transaction's commit (so a failed transaction leaves no table behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableReservation {
    /// The table's number.
    pub number: u32,
    /// Its `by_id` index.
    pub by_id: IndexId,
    /// Its `by_creation_time` index.
    pub by_creation_time: IndexId,
}

/// A pseudo-index whose keys are table names: reading a table that does not exist records
/// a point on it, and the commit that creates the table writes that point, so readers of a
/// missing table conflict with (and subscriptions are woken by) its creation.
pub const TABLES_INDEX: IndexId = IndexId(0);

/// The keyspace key of a table's name in [`TABLES_INDEX`].
pub fn table_name_key(name: &str) -> Vec<u8> {
    let mut key = TABLES_INDEX.prefix().to_vec();
    crate::keys::encode_value(&crate::value::Value::String(name.to_owned()), &mut key);
    key
}

/// Name of the built-in index on `_id`.
pub const BY_ID: &str = "by_id";
/// Name of the built-in index on `_creationTime`.
pub const BY_CREATION_TIME: &str = "by_creation_time";

/// All tables and indexes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    tables: BTreeMap<u32, TableDescriptor>,
    indexes: BTreeMap<IndexId, IndexDescriptor>,
    next_table: u32,
    next_index: u32,
    #[serde(skip)]
    by_name: BTreeMap<String, u32>,
}

/// Check a table or index name: an identifier of at most 64 characters (letters, digits,
/// underscores; starting with a letter), as Convex requires of user table and index names.
pub fn check_identifier(kind: &str, name: &str) -> Result<(), SchemaError> {
    let ok = !name.is_empty()
        && name.len() <= limits::MAX_IDENTIFIER_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::new(format!(
            "invalid {kind} name {name:?}: {kind} names are identifiers of at most {} characters \
             (letters, digits and underscores, starting with a letter)",
            limits::MAX_IDENTIFIER_LEN
        )))
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Catalog {
            next_table: TableNumber::FIRST_USER.0,
            next_index: 1,
            ..Catalog::default()
        }
    }

    /// Parse the persisted JSON form.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let mut c: Catalog = serde_json::from_str(json)
            .map_err(|e| Error::Corrupt(format!("the stored catalog does not parse: {e}")))?;
        c.by_name = c
            .tables
            .values()
            .map(|t| (t.name.clone(), t.number))
            .collect();
        for index in c.indexes.values_mut() {
            index.derive_key_fields()?;
        }
        Ok(c)
    }

    /// The persisted JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&TableDescriptor> {
        self.tables.get(self.by_name.get(name)?)
    }

    /// A table by number.
    pub fn table_by_number(&self, number: TableNumber) -> Option<&TableDescriptor> {
        self.tables.get(&number.0)
    }

    /// All tables, by number.
    pub fn tables(&self) -> impl Iterator<Item = &TableDescriptor> {
        self.tables.values()
    }

    /// An index by id.
    pub fn index(&self, id: IndexId) -> Option<&IndexDescriptor> {
        self.indexes.get(&id)
    }

    /// All indexes, by id.
    pub fn all_indexes(&self) -> impl Iterator<Item = &IndexDescriptor> {
        self.indexes.values()
    }

    /// An index by table and name.
    pub fn index_by_name(&self, table: &TableDescriptor, name: &str) -> Option<&IndexDescriptor> {
        self.indexes.get(table.indexes.get(name)?)
    }

    /// The indexes of a table (built-in ones included).
    pub fn table_indexes<'a>(
        &'a self,
        table: &'a TableDescriptor,
    ) -> impl Iterator<Item = &'a IndexDescriptor> + 'a {
        table.indexes.values().filter_map(|id| self.indexes.get(id))
    }

    /// The `by_id` index of a table.
    pub fn by_id(&self, table: TableNumber) -> Option<IndexId> {
        self.tables.get(&table.0)?.indexes.get(BY_ID).copied()
    }

    /// Add a table with its built-in indexes (ready from `ready_since`); returns its number.
    pub fn add_table(&mut self, name: &str, ready_since: u64) -> Result<TableNumber, Error> {
        check_identifier("table", name).map_err(Error::Schema)?;
        self.add_table_named(name, ready_since)
    }

    /// Add a system table (its name starts with `_`; users cannot name such tables).
    pub fn add_system_table(&mut self, name: &str, ready_since: u64) -> Result<TableNumber, Error> {
        let Some(rest) = name.strip_prefix('_') else {
            return Err(Error::Schema(SchemaError::new(format!(
                "system table names start with '_', not {name:?}"
            ))));
        };
        check_identifier("table", rest).map_err(Error::Schema)?;
        self.add_table_named(name, ready_since)
    }

    /// Add a table with a given number (importing a snapshot whose ids carry it).
    pub fn add_table_numbered(
        &mut self,
        name: &str,
        number: u32,
        ready_since: u64,
    ) -> Result<TableNumber, Error> {
        check_identifier("table", name).map_err(Error::Schema)?;
        if number == 0 || self.tables.contains_key(&number) {
            return Err(Error::Schema(SchemaError::new(format!(
                "table number {number} of {name:?} is taken or invalid"
            ))));
        }
        let next = std::mem::replace(&mut self.next_table, number);
        let out = self.add_table_named(name, ready_since);
        self.next_table = next.max(number + 1);
        out
    }

    fn add_table_named(&mut self, name: &str, ready_since: u64) -> Result<TableNumber, Error> {
        if self.by_name.contains_key(name) {
            return Err(Error::Schema(SchemaError::new(format!(
                "table {name:?} already exists"
            ))));
        }
        let number = self.next_table;
        self.next_table += 1;
        self.tables.insert(
            number,
            TableDescriptor {
                number,
                name: name.to_owned(),
                indexes: BTreeMap::new(),
            },
        );
        self.by_name.insert(name.to_owned(), number);
        for builtin in [BY_ID, BY_CREATION_TIME] {
            self.insert_index(
                number,
                builtin,
                Vec::new(),
                IndexState::Ready { since: ready_since },
            )?;
        }
        Ok(TableNumber(number))
    }

    /// Reserve the numbers of a new table `name` without adding it (see
    /// [`TableReservation`]).
    pub fn reserve_table(&mut self, name: &str) -> Result<TableReservation, Error> {
        check_identifier("table", name).map_err(Error::Schema)?;
        let number = self.next_table;
        self.next_table += 1;
        let by_id = IndexId(self.next_index);
        let by_creation_time = IndexId(self.next_index + 1);
        self.next_index += 2;
        Ok(TableReservation {
            number,
            by_id,
            by_creation_time,
        })
    }

    /// Add a table with the numbers of a reservation (ready from `ready_since`).
    pub fn add_reserved_table(
        &mut self,
        name: &str,
        r: &TableReservation,
        ready_since: u64,
    ) -> Result<(), Error> {
        if self.by_name.contains_key(name) {
            return Err(Error::Schema(SchemaError::new(format!(
                "table {name:?} already exists"
            ))));
        }
        self.next_table = self.next_table.max(r.number + 1);
        self.next_index = self.next_index.max(r.by_creation_time.0 + 1);
        let mut indexes = BTreeMap::new();
        indexes.insert(BY_ID.to_owned(), r.by_id);
        indexes.insert(BY_CREATION_TIME.to_owned(), r.by_creation_time);
        self.tables.insert(
            r.number,
            TableDescriptor {
                number: r.number,
                name: name.to_owned(),
                indexes,
            },
        );
        self.by_name.insert(name.to_owned(), r.number);
        for (id, index_name) in [(r.by_id, BY_ID), (r.by_creation_time, BY_CREATION_TIME)] {
            let mut d = IndexDescriptor {
                id,
                table: r.number,
                name: index_name.to_owned(),
                user_fields: Vec::new(),
                state: IndexState::Ready { since: ready_since },
                key_fields: Vec::new(),
            };
            d.derive_key_fields()?;
            self.indexes.insert(id, d);
        }
        Ok(())
    }

    /// Add a user index, in `state`; returns its id.
    pub fn add_index(
        &mut self,
        table: &str,
        name: &str,
        fields: Vec<String>,
        state: IndexState,
    ) -> Result<IndexId, Error> {
        check_identifier("index", name).map_err(Error::Schema)?;
        let number = *self
            .by_name
            .get(table)
            .ok_or_else(|| Error::TableNotFound(table.into()))?;
        if fields.is_empty() || fields.len() > 16 {
            return Err(Error::Schema(SchemaError::new(format!(
                "index {table}.{name} must name between 1 and 16 fields (limit: fields per index)"
            ))));
        }
        for f in &fields {
            if f == "_id" || f == "_creationTime" {
                return Err(Error::Schema(SchemaError::new(format!(
                    "index {table}.{name}: {f} is added to every index automatically; \
                     do not list it"
                ))));
            }
        }
        self.insert_index(number, name, fields, state)
    }

    fn insert_index(
        &mut self,
        table: u32,
        name: &str,
        user_fields: Vec<String>,
        state: IndexState,
    ) -> Result<IndexId, Error> {
        let t = self
            .tables
            .get_mut(&table)
            .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
        if t.indexes.contains_key(name) {
            return Err(Error::Schema(SchemaError::new(format!(
                "index {name:?} already exists on table {:?}",
                t.name
            ))));
        }
        let id = IndexId(self.next_index);
        self.next_index += 1;
        let mut d = IndexDescriptor {
            id,
            table,
            name: name.to_owned(),
            user_fields,
            state,
            key_fields: Vec::new(),
        };
        d.derive_key_fields()?;
        t.indexes.insert(name.to_owned(), id);
        self.indexes.insert(id, d);
        Ok(id)
    }

    /// Remove a user index; returns its descriptor.
    pub fn remove_index(&mut self, id: IndexId) -> Option<IndexDescriptor> {
        let d = self.indexes.remove(&id)?;
        if let Some(t) = self.tables.get_mut(&d.table) {
            t.indexes.remove(&d.name);
        }
        Some(d)
    }

    /// Mark an index ready from `since`.
    pub fn set_ready(&mut self, id: IndexId, since: u64) {
        if let Some(d) = self.indexes.get_mut(&id) {
            d.state = IndexState::Ready { since };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_indexes_round_trip() {
        let mut c = Catalog::new();
        let t = c.add_table("messages", 0).unwrap();
        assert_eq!(t, TableNumber(10001));
        c.add_index(
            "messages",
            "by_channel",
            vec!["channel".into()],
            IndexState::Backfilling,
        )
        .unwrap();
        let back = Catalog::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let table = back.table("messages").unwrap();
        let idx = back.index_by_name(table, "by_channel").unwrap();
        let names: Vec<String> = idx.key_fields.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["channel", "_creationTime", "_id"]);
        assert!(c.add_table("messages", 0).is_err());
        assert!(c.add_table("_system", 0).is_err());
        assert!(
            c.add_index(
                "messages",
                "bad",
                vec!["_id".into()],
                IndexState::Backfilling
            )
            .is_err()
        );
    }
}
