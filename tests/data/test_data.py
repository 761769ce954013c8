"""Text sources and context packing."""
import json

import pytest
import torch

from actlab.data import load_texts, pack_contexts
from actlab.data.pack import doc_tokens


def test_txt_paragraphs_and_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first doc\nstill first\n\nsecond doc\n  \nthird\n")
    assert load_texts(p) == ["first doc\nstill first", "second doc", "third"]
    q = tmp_path / "b.txt"
    q.write_text("one\ntwo\nthree\n")
    assert load_texts(q) == ["one", "two", "three"]
    assert load_texts(p, txt_mode="lines") == ["first doc", "still first", "second doc", "third"]


def test_jsonl_and_folder(tmp_path):
    p = tmp_path / "d" / "x.jsonl"
    p.parent.mkdir()
    p.write_text(json.dumps({"text": "alpha"}) + "\n\n" + json.dumps({"text": "beta", "id": 2}) + "\n")
    (tmp_path / "d" / "y.txt").write_text("gamma")
    assert load_texts(p) == ["alpha", "beta"]
    assert load_texts(tmp_path / "d") == ["alpha", "beta", "gamma"]
    q = tmp_path / "c.jsonl"
    q.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl:1: no 'text' field \(found \['body'\]\)"):
        load_texts(q)
    assert load_texts(q, text_field="body") == ["x"]
    q.write_text("{oops\n")
    with pytest.raises(ValueError, match="c.jsonl:1: not valid JSON"):
        load_texts(q)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texts(tmp_path / "missing.jsonl")
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(ValueError, match="empty"):
        load_texts(tmp_path / "e.jsonl")
    (tmp_path / "f.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported data file"):
        load_texts(tmp_path / "f.csv")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_texts(tmp_path / "emptydir")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one doc", "two doc"], "n": [1, 2]}), tmp_path / "t.parquet")
    assert load_texts(tmp_path / "t.parquet") == ["one doc", "two doc"]
    with pytest.raises(ValueError, match="no column 'body'"):
        load_texts(tmp_path / "t.parquet", text_field="body")


def test_hf_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    from datasets.table import InMemoryTable

    table = InMemoryTable(pa.table({"text": ["hello there", "general"]}))
    datasets.Dataset(table, fingerprint="fixed").save_to_disk(str(tmp_path / "ds"))  # explicit fingerprint: no dill
    assert load_texts(tmp_path / "ds") == ["hello there", "general"]


def test_pack_contexts_positions_docs_and_seed(tiny):
    tok = tiny("tiny-llama").tokenizer
    docs = [f"document number {i} " + "x" * (i * 7 % 40) for i in range(30)]
    pk = pack_contexts(tok, docs, 16, seed=5)
    assert pk.input_ids.shape == pk.doc_ids.shape == pk.positions.shape and pk.input_ids.shape[1] == 16
    toks = doc_tokens(tok, docs)
    for ids, d, p in zip(pk.input_ids.reshape(-1).tolist(), pk.doc_ids.reshape(-1).tolist(),
                         pk.positions.reshape(-1).tolist()):
        assert toks[d][p] == ids
    flat_pos = pk.positions.reshape(-1)
    starts = (flat_pos == 0).nonzero().squeeze(1)
    assert (pk.input_ids.reshape(-1)[starts] == tok.bos_token_id).all()  # BOS opens every document
    n_total = sum(len(t) for t in toks)
    assert pk.n_tokens == n_total // 16 * 16  # only the trailing partial context is dropped
    again = pack_contexts(tok, docs, 16, seed=5)
    other = pack_contexts(tok, docs, 16, seed=6)
    assert torch.equal(pk.input_ids, again.input_ids) and not torch.equal(pk.input_ids, other.input_ids)
    from actlab.data.pack import iter_contexts
    for chunk in (1, 3, 1000):       # the growing tokenizer chunks never change what is packed
        rows = list(iter_contexts(tok, docs, 16, seed=5, chunk_docs=chunk))
        assert torch.equal(torch.stack([r[0] for r in rows]), pk.input_ids)
        assert torch.equal(torch.stack([r[1] for r in rows]), pk.doc_ids)
    nobos = pack_contexts(tok, docs, 16, seed=5, add_bos=False)
    assert not (nobos.input_ids == tok.bos_token_id).any()
    with pytest.raises(ValueError, match="fewer than one context"):
        pack_contexts(tok, ["hi"], 64)


@pytest.mark.real
def test_demo_corpus_has_200k_smollm2_tokens():
    from transformers import AutoTokenizer

    from actlab.data import demo_corpus
    from actlab.models.load import smollm2_dir

    p = demo_corpus()
    assert p.exists() and demo_corpus() == p
    docs = load_texts(p)
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    n = sum(len(x) for x in tok(docs, add_special_tokens=False)["input_ids"])
    assert n >= 200_000, n
    text = " ".join(docs[:50]).lower()
    assert sum(text.count(w) for w in (" the ", " is ", " of ")) > 200  # English prose


def test_binary_and_undecodable_input_refused_naming_the_file(tmp_path):
    """Issue 14 item 13: binary .txt input used to be stored as U+FFFD garbage rows; .jsonl decode errors named
    no file or line."""
    b = tmp_path / "blob.txt"
    b.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"blob\.txt: not UTF-8 text \(byte 0x80 at offset 128\)"):
        load_texts(b)
    z = tmp_path / "zeros.txt"
    z.write_bytes(b"looks like text\x00\x00\x01 but is not")
    with pytest.raises(ValueError, match=r"zeros\.txt: holds a NUL byte at offset 15"):
        load_texts(z)
    j = tmp_path / "bad.jsonl"
    j.write_bytes(json.dumps({"text": "fine"}).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not UTF-8 text"):
        load_texts(j)
    j.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": None}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'text' holds NoneType null, not a string"):
        load_texts(j)
    j.write_text(json.dumps({"text": "fine"}) + "\n\n" + '{"text": "a" "b"}' + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON \(.* at column 14\)"):
        load_texts(j)
    # UTF-8 with a byte-order mark and non-ASCII text is fine
    u = tmp_path / "bom.txt"
    u.write_bytes("\ufeffcafé crème".encode("utf-8"))
    assert load_texts(u) == ["café crème"]


def test_demo_resolves_everywhere(tmp_path):
    """Issue 14 item 13: `--data demo` worked only in harvest; one resolver serves every reader."""
    from actlab.data import data_fingerprint, demo_corpus, resolve_data

    assert resolve_data("demo") == demo_corpus() == resolve_data(None)
    assert load_texts("demo")[:3] == load_texts(demo_corpus())[:3]
    assert data_fingerprint("demo") == data_fingerprint(demo_corpus())
    with pytest.raises(FileNotFoundError, match="'demo' for the bundled demo corpus"):
        resolve_data(tmp_path / "nope.txt")
