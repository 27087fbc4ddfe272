import test from "ava";
import { redactUrl } from "../../core/redact.js";
import { Prober } from "../../health/prober.js";

test("redactUrl hides user and password, leaves other URLs alone", (t) => {
  t.is(redactUrl("http://user:pass@10.0.0.1:8080/health?x=1"), "http://redacted@10.0.0.1:8080/health?x=1");
  t.is(redactUrl("https://10.0.0.1/"), "https://10.0.0.1/");
  t.is(redactUrl("not a url //u:p@host/x"), "not a url //redacted@host/x");
});

test("a probe's URL with credentials is shown without them in its status", (t) => {
  const p = new Prober();
  p.add({ name: "fw", kind: "http", target: "", url: "http://admin:s3cret@127.0.0.1:1/", intervalMs: 1000 });
  const s = p.statuses()[0]!;
  t.false(JSON.stringify(s).includes("s3cret"));
  t.is(s.target, "http://redacted@127.0.0.1:1/");
  p.remove("fw");
});
