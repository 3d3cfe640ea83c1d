//! The tensor serializer plugin (being written; see its issue).
