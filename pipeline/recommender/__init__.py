"""The recommender core behind the `query` consumer, one module per concept.

- `index`, `library`: each model's tracks as the query service reads them
  (vectors cached in memory when they fit; Milvus stays the store of record);
- `merge`, `penalties`, `diversity`, `duplicates`, `finish`: the shared steps
  (multi-model merging, dislikes and negative prompts, MMR, artist cap,
  near-duplicates);
- `recommend`, `text_search`, `similar`, `path`, `alchemy`, `fingerprint`,
  `duplicates`: one module per request type;
- `seeds`: Navidrome seed modes from plays, stars and ratings;
- `prompts`: the text encoders, prompts in each model's terms (`text` and negative prompts);
- `batching`: concurrent requests sharing one matrix product or forward pass;
- `engine`: request in, reply out.
"""
