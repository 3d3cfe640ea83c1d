//! The arrow serializer plugin (being written; see its issue).
