//! A search's query and its collector: an exact name match ranks first, then names starting
//! with the text, then the words' BM25 score; the policy is asked about a document only when
//! it could enter the page, so a search matching half the index never reads half the names.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, InvertedIndexRangeQuery, Occur, Query, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, Term};

use super::schema::{Fields, PREFIX_TERMS};

/// The score an exact name match adds: above any text score (BM25 gives a few tens at most).
const EXACT: f32 = 1_000_000.0;
/// The score a name prefix match adds.
const PREFIX: f32 = 1_000.0;

/// The query for `text`: `None` when it has nothing to search for.
pub fn build(fields: &Fields, text: &str) -> Option<Box<dyn Query>> {
    let whole = text.trim().to_lowercase();
    if whole.is_empty() {
        return None;
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let exact = Term::from_field_text(fields.name_lc, &whole);
    clauses.push((
        Occur::Should,
        Box::new(ConstScoreQuery::new(
            Box::new(TermQuery::new(exact, IndexRecordOption::Basic)),
            EXACT,
        )),
    ));
    let prefix: Box<dyn Query> = if whole.chars().count() <= PREFIX_TERMS {
        let term = Term::from_field_text(fields.prefixes, &whole);
        Box::new(TermQuery::new(term, IndexRecordOption::Basic))
    } else {
        let upper = format!("{whole}\u{10FFFF}");
        Box::new(InvertedIndexRangeQuery::new(
            Bound::Included(Term::from_field_text(fields.name_lc, &whole)),
            Bound::Excluded(Term::from_field_text(fields.name_lc, &upper)),
        ))
    };
    clauses.push((
        Occur::Should,
        Box::new(ConstScoreQuery::new(prefix, PREFIX)),
    ));
    let words = tokens(&whole);
    if !words.is_empty() {
        // Every word must match somewhere: the name's words, keywords, description, people.
        let every: Vec<(Occur, Box<dyn Query>)> = words
            .iter()
            .map(|word| (Occur::Must, word_query(fields, word)))
            .collect();
        clauses.push((Occur::Should, Box::new(BooleanQuery::new(every))));
    }
    Some(Box::new(BooleanQuery::new(clauses)))
}

/// One word in any text field, weighted: a word of the name counts most.
fn word_query(fields: &Fields, word: &str) -> Box<dyn Query> {
    let weighted = [
        (fields.words, 3.0),
        (fields.keywords, 2.0),
        (fields.description, 1.0),
        (fields.people, 1.0),
    ];
    let any: Vec<(Occur, Box<dyn Query>)> = weighted
        .into_iter()
        .map(|(field, boost)| {
            let term = Term::from_field_text(field, word);
            let query: Box<dyn Query> = Box::new(BoostQuery::new(
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                boost,
            ));
            (Occur::Should, query)
        })
        .collect();
    Box::new(BooleanQuery::new(any))
}

/// `text` cut into words as the text fields were (letters and digits, lowercased).
fn tokens(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(mut analyzer) = TokenizerManager::default().get("default") {
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            if !words.contains(&token.text) {
                words.push(token.text.clone());
            }
        }
    }
    words
}

/// Whether a package may be shown to this caller (asked with its name as published).
pub type Admit = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One hit: its rank, where it is and its name.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The query's score.
    pub score: Score,
    /// The name's length (shorter first among equal scores).
    len: u64,
    /// The document.
    pub address: DocAddress,
    /// The name's ordinal in its segment's name column: a segment's ordinals follow its names'
    /// byte order, so within a segment ties are broken without reading a name.
    ord: u64,
    /// The package's name.
    pub name: String,
}

impl Ranked {
    fn key(&self) -> (Score, std::cmp::Reverse<u64>) {
        (self.score, std::cmp::Reverse(self.len))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    /// Better first: higher score, then shorter name, then the name's order.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        b.0.total_cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// The matches the policy admits: how many (those never asked about are counted), and the best
/// `limit` of them, best first.
pub struct Admitted {
    /// The best `limit`, policy checked.
    pub limit: usize,
    /// The policy.
    pub admit: Admit,
}

/// What one segment (or the whole index) found.
#[derive(Debug, Default)]
pub struct Found {
    /// Matches, less those the policy refused.
    pub total: u64,
    /// The best admitted ones, best first.
    pub best: Vec<Ranked>,
}

impl Collector for Admitted {
    type Fruit = Found;
    type Child = SegmentAdmitted;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentAdmitted> {
        let fast = reader.fast_fields();
        let names = fast.str("name")?.ok_or_else(|| {
            tantivy::TantivyError::SchemaError("the name field is not a fast field".into())
        })?;
        let lens = fast.u64("len")?;
        Ok(SegmentAdmitted {
            segment,
            names,
            lens,
            limit: self.limit,
            admit: self.admit.clone(),
            total: 0,
            heap: BinaryHeap::new(),
            buffer: String::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Found>) -> tantivy::Result<Found> {
        let total = fruits.iter().map(|f| f.total).sum();
        let mut best: Vec<Ranked> = fruits.into_iter().flat_map(|f| f.best).collect();
        best.sort();
        best.truncate(self.limit);
        Ok(Found { total, best })
    }
}

/// [`Admitted`] on one segment.
pub struct SegmentAdmitted {
    segment: SegmentOrdinal,
    names: StrColumn,
    lens: Column<u64>,
    limit: usize,
    admit: Admit,
    total: u64,
    /// The best so far, worst on top.
    heap: BinaryHeap<Ranked>,
    buffer: String,
}

impl SegmentCollector for SegmentAdmitted {
    type Fruit = Found;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        if self.limit == 0 {
            return;
        }
        let worst = (self.heap.len() >= self.limit)
            .then(|| self.heap.peek())
            .flatten();
        if worst.is_some_and(|worst| score < worst.score) {
            return;
        }
        let len = self.lens.first(doc).unwrap_or(0);
        let key = (score, std::cmp::Reverse(len));
        if worst.is_some_and(|worst| key < worst.key()) {
            return;
        }
        let ord = self.names.ords().first(doc);
        // Equal in score and length, the name decides (as in `Ranked`'s order), whatever
        // order the documents come in: a page must not depend on where a document is. The
        // name's ordinal says which comes first, so a tie that loses reads no name.
        if let (Some(worst), Some(ord)) = (worst, ord) {
            if key == worst.key() && ord >= worst.ord {
                return;
            }
        }
        self.buffer.clear();
        let named =
            ord.is_some_and(|ord| matches!(self.names.ord_to_str(ord, &mut self.buffer), Ok(true)));
        if !named || !(self.admit)(&self.buffer) {
            // Refused: it is not a match for this caller.
            self.total -= 1;
            return;
        }
        self.heap.push(Ranked {
            score,
            len,
            address: DocAddress::new(self.segment, doc),
            ord: ord.unwrap_or(u64::MAX),
            name: self.buffer.clone(),
        });
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    fn harvest(self) -> Found {
        Found {
            total: self.total,
            best: self.heap.into_sorted_vec(),
        }
    }
}
