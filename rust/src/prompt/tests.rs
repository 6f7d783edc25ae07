use super::*;
use crate::tokenize::tests::{golden_dir, qwen};
use serde_json::Value;

fn cases(name: &str) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("cases").join(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn texts(side: &Value) -> Vec<String> {
    side.get("texts")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn side(images: &[usize], texts: &[&str]) -> Side {
    Side { images: images.to_vec(), texts: texts.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// Every row of a call, each expected to fit.
fn fitting(rows: Vec<Row>) -> Vec<Vec<u32>> {
    rows.into_iter().map(|r| r.expect("row fits")).collect()
}

#[test]
fn golden_vl_rerank_text_only_cases_exact() {
    // Image cases need pixel geometry (tested in Python, tests/test_prompts.py); text ones here.
    let mut n = 0;
    for case in cases("vl_rerank.json") {
        if case["query"].get("images").is_some() {
            continue;
        }
        let q = Side { texts: texts(&case["query"]), ..Default::default() };
        let instr = case["instruction"].as_str();
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let (docs, results): (Vec<Side>, Vec<&Value>) = case["documents"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["results"].as_array().unwrap())
            .filter(|(d, _)| d.get("images").is_none())
            .map(|(d, r)| (Side { texts: texts(d), ..Default::default() }, r))
            .unzip();
        for (got, r) in fitting(vl_rerank_ids(qwen(), &q, &docs, instr, max_length).unwrap()).iter().zip(results) {
            assert_eq!(got, &ids(&r["input_ids"]));
            n += 1;
        }
    }
    assert!(n > 0);
}

#[test]
fn golden_text_rerank_cases_exact() {
    for case in cases("text_rerank.json") {
        let q = case["query"].as_str().unwrap();
        let instr = case["instruction"].as_str();
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let docs: Vec<&str> = case["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
        let got = text_rerank_ids(qwen(), q, &docs, instr, max_length).unwrap();
        for (g, r) in got.iter().zip(case["results"].as_array().unwrap()) {
            assert_eq!(g, &ids(&r["input_ids"]));
            assert_eq!(g.len() as u64, r["prompt_tokens"].as_u64().unwrap());
        }
    }
}

#[test]
fn embed_instruction_rule() {
    assert_eq!(embed_instruction(None), EMBED_DEFAULT_INSTRUCTION);
    assert_eq!(embed_instruction(Some("   ")), EMBED_DEFAULT_INSTRUCTION);
    assert_eq!(embed_instruction(Some("  Trailing!  ")), "Trailing!");
    assert_eq!(embed_instruction(Some("Find it")), "Find it.");
    assert_eq!(embed_instruction(Some("Find it。")), "Find it。");
    assert_eq!(embed_instruction(Some("a)")), "a)");
    assert_eq!(embed_instruction(Some("a$")), "a$."); // $ is a symbol (Sc), not punctuation
    assert_eq!(embed_instruction(Some("\u{1f}x\u{a0}")), "x.");
}

#[test]
fn truncation_keeps_specials_and_tail() {
    let special = [100, 101];
    let ids: Vec<u32> = vec![100, 1, 2, 101, 3, 4, 5, 100, 6, 7, 8, 9, 10];
    // head = first 8 ids (3 specials, 5 others); max_length 5 -> 2 others kept
    let out = truncate_keep_special(&ids, 5, &special);
    assert_eq!(out, vec![100, 1, 2, 101, 100, 6, 7, 8, 9, 10]);
    assert_eq!(truncate_keep_special(&ids, 8, &special), ids);
    // more specials than max_length: every special kept, no other
    assert_eq!(truncate_keep_special(&ids, 1, &special), vec![100, 101, 100, 6, 7, 8, 9, 10]);
}

#[test]
fn special_strings_in_user_text_stay_plain() {
    let q = side(&[], &["<|im_end|><|image_pad|>"]);
    let d = side(&[3], &["<think>"]);
    let got = fitting(vl_rerank_ids(qwen(), &q, &[d], None, VL_RERANK_MAX_LENGTH).unwrap()).remove(0);
    assert_eq!(got.iter().filter(|&&t| t == 151655).count(), 3);
    assert_eq!(got.iter().filter(|&&t| t == 151645).count(), 2);
    assert!(!got.contains(&151667));
}

#[test]
fn the_skeleton_measures_the_written_row() {
    // Lengths computed from the skeleton equal the written, truncated rows, for every mix of image
    // sizes, video pairs, text lengths and max_length (pads shift the budget of the other tokens).
    let tok = qwen();
    let marks = Marks::of(tok).unwrap();
    let special = truncation_special_ids(tok);
    let video = VideoTokens { pads_per_pair: 7, timestamps: vec!["<0.5 seconds>".into(), "<2.5 seconds>".into()] };
    for images in [vec![], vec![1], vec![5, 300], vec![2000, 2000, 2000]] {
        for words in [0, 3, 400] {
            let text = "word ".repeat(words);
            let q = Side { texts: vec![text.clone()], images: images.clone(), videos: vec![video.clone()] };
            let d = side(&images, &[&text]);
            let sk = vl_rerank_skeleton(tok, &marks, &q, &d, "i").unwrap();
            let full = sk.expand().unwrap();
            assert_eq!(full.len(), sk.len());
            assert_eq!(full.iter().filter(|&&t| t == 151644).count(), 3); // <|im_start|>
            for max_length in [1, 20, 500, 4000, CONTEXT_TOKENS] {
                let want = truncate_keep_special(&full, max_length, &special);
                match vl_rerank_row(&sk, &special, max_length, 0).unwrap() {
                    Ok(got) => assert_eq!(got, want),
                    Err(o) => panic!("{images:?} {words} {max_length}: {o:?}"),
                }
            }
        }
    }
}

#[test]
fn a_rerank_row_over_the_context_says_the_tokens_it_needs() {
    let tok = qwen();
    let q = side(&[], &["q"]);
    let docs = [side(&[], &["text only"]), side(&[20_000, 20_000], &["a caption"]), side(&[4], &["fine"])];
    let rows = vl_rerank_ids(tok, &q, &docs, None, VL_RERANK_MAX_LENGTH).unwrap();
    assert!(rows[0].is_ok() && rows[2].is_ok(), "the other rows are built");
    let o = rows[1].clone().unwrap_err();
    assert_eq!(o.field, "documents[1]");
    // The tokens besides the image pads are those of the row with one-token images.
    let ones = fitting(vl_rerank_ids(tok, &q, &[side(&[1, 1], &["a caption"])], None, VL_RERANK_MAX_LENGTH).unwrap());
    assert_eq!(o.fixed_tokens, ones[0].len() - 2);
    assert_eq!((o.image_tokens, o.needed), (40_000, o.fixed_tokens + 40_000));
    assert!(o.message.contains(&format!("needs {} tokens", o.needed)), "{}", o.message);
    assert!(o.message.contains("the media alone needs 40004 tokens"), "{}", o.message);
}

#[test]
fn an_embedding_row_cut_through_an_image_says_the_tokens_it_needs() {
    let tok = qwen();
    let inputs = [side(&[], &["x"]), side(&[100], &["after the image"]), side(&[3], &[&"long text ".repeat(200)])];
    let rows = vl_embed_ids(tok, &inputs, None, 50).unwrap();
    assert_eq!(rows[0].as_ref().unwrap().len(), fitting(vl_embed_ids(tok, &inputs[..1], None, CONTEXT_TOKENS).unwrap())[0].len());
    // Text after the image is cut, the image is not: the row fits.
    let full = fitting(vl_embed_ids(tok, &inputs[2..], None, CONTEXT_TOKENS).unwrap()).remove(0);
    assert_eq!(rows[2].as_ref().unwrap(), &full[..50]);
    let o = rows[1].clone().unwrap_err();
    let full = fitting(vl_embed_ids(tok, &inputs[1..2], None, CONTEXT_TOKENS).unwrap()).remove(0);
    assert_eq!((o.field.as_str(), o.needed, o.image_tokens), ("inputs[1]", full.len(), 100));
    // Everything up to the image's <|vision_end|> but its pads must fit within max_length.
    let last_pad = full.iter().rposition(|&t| t == 151655).unwrap();
    assert_eq!(o.fixed_tokens, last_pad + 1 - 100);
    assert!(o.message.contains("max_length is 50"), "{}", o.message);
}

#[test]
fn errors() {
    let tok = qwen();
    let empty = Side::default();
    for bad in [0, 40_000] {
        assert!(matches!(vl_rerank_ids(tok, &empty, &[empty.clone()], None, bad), Err(Error::InvalidInput { .. })));
    }
    match vl_embed_ids(tok, &[empty.clone(), side(&[0], &[])], None, 100) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "inputs[1].images[0]"),
        other => panic!("{other:?}"),
    }
    // A count of any size is measured, never allocated: its row does not fit.
    for rows in [vl_embed_ids(tok, &[side(&[usize::MAX, usize::MAX], &[])], None, 100).unwrap(),
                 vl_rerank_ids(tok, &empty, &[side(&[usize::MAX, 7], &[])], None, 100).unwrap()] {
        let o = rows[0].clone().unwrap_err();
        assert_eq!((o.needed, o.image_tokens), (usize::MAX, usize::MAX));
    }
    match vl_rerank_ids(tok, &side(&[0], &[]), &[empty.clone()], None, 100) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "query.images[0]"),
        other => panic!("{other:?}"),
    }
    match vl_rerank_ids(tok, &empty, &[empty.clone(), side(&[0], &[])], None, 100) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "documents[1].images[0]"),
        other => panic!("{other:?}"),
    }
    let no_pairs = Side { videos: vec![VideoTokens { pads_per_pair: 4, timestamps: vec![] }], ..Default::default() };
    match vl_embed_ids(tok, &[no_pairs], None, 100) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "inputs[0].videos[0]"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(text_rerank_ids(tok, "q", &["d"], None, 20), Err(Error::InvalidInput { .. })));
}
