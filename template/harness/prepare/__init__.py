"""Data preparation: text in, the subnet's paged token corpus out (docs/data.md), one job a module.

    sources         what a --source names (shakespeare, hf:<name>, files), documents in a fixed order
    readers         the documents of one .parquet / .jsonl / .txt file, plain, .gz or .zst, streamed
    tokenization    training a byte-level BPE; documents -> token arrays joined with EOS, in batches
    corpus_writer   tokens -> samples -> shuffled chunks -> pages routed to train / held-out
    shards          pages -> shard files with their page-digest index; default page size
    checkpoint      saving and resuming a killed run
    manifest        the finished corpus's manifest; checking a local corpus page by page
    pipeline        the steps in order: prepare_corpus, prepare_dataset
    publish         upload to the dataset bucket; mirror a published corpus into another bucket
    cli             the flags of scripts/prepare_data.py
"""
