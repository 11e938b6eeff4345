//! The CLI's verbs, each a thin driver of the pipeline.

pub mod evaluate;
pub mod replay;
pub mod series;
pub mod serve;
