// Send a large file in pieces under the server's request limit (server/chunked_upload.py) and
// resolve with the upload id the form then posts instead of the file. After a network error or a
// busy server it asks the server how much it holds and goes on from there.
"use strict";

mgs.uploadInPieces = async (kind, file, csrf, onProgress) => {
  const base = `/api/v1/uploads/${kind}`;
  const call = async (method, url, body, type) => {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf };
    if (type) headers["Content-Type"] = type;
    const r = await fetch(url, { method, headers, body, credentials: "same-origin" });
    let answer = {};
    try { answer = await r.json(); } catch (err) {
      answer = { error: r.status === 413 ? "a piece was larger than the server accepts ([http] max_request_kb)" : `the server answered ${r.status}` };
    }
    return { status: r.status, body: answer };
  };
  const failed = (body) => new Error(body.error || "the server refused the upload");
  const begun = await call("POST", base, JSON.stringify({ filename: file.name, size: file.size }), "application/json");
  if (begun.status !== 201) throw failed(begun.body);
  const { id, chunk_bytes: chunk } = begun.body;
  let offset = 0, retries = 0;
  while (offset < file.size) {
    onProgress(offset / file.size);
    let answer = null;
    try {
      answer = await call("PUT", `${base}/${id}?offset=${offset}`, file.slice(offset, offset + chunk), "application/octet-stream");
    } catch (err) {
      answer = null;  // no answer: the network or the server is away for now
    }
    if (answer && answer.status === 200) {
      offset = answer.body.offset;
      retries = 0;
    } else if (answer && answer.status === 409 && typeof answer.body.offset === "number") {
      offset = answer.body.offset;  // a piece whose answer was lost: go on from what the server holds
    } else if (answer && answer.status < 500 && answer.status !== 429) {
      throw failed(answer.body);
    } else {
      retries += 1;
      if (retries > 8) throw new Error("the upload stopped: no answer from the server; try again later");
      await new Promise((done) => setTimeout(done, Math.min(30, 2 ** retries) * 1000));
      try {
        const held = await call("GET", `${base}/${id}`);
        if (held.status === 200) offset = held.body.offset;
        else if (held.status < 500) throw failed(held.body);
      } catch (err) {
        if (!(err instanceof TypeError)) throw err;  // TypeError: still no answer, try again
      }
    }
  }
  onProgress(1);
  return id;
};
