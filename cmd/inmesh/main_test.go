package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const validDoc = `
version: cli-1
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    timeout: 2s
    retry: {attempts: 3}
    routes:
      - name: canary-by-header
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: charge
        match: {path_prefix: /charge, methods: [POST]}
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`

const protectedDoc = `
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001}]
    concurrency: {max: 4, max_wait: 25ms}
    circuit_breaker: {failure_rate: 0.5, window: 1s}
    hedge: {delay: 20ms}
    rate_limit: {requests_per_second: 100, burst: 200, per_caller: true}
    fault: {abort: {percent: 5}, only_with_header: x-inmesh-fault}
`

const badProtectionDoc = `
services:
  billing:
    concurrency: {max: 4, adaptive: {max: 9}}
    circuit_breaker: {failure_rate: 0.5, consecutive_failures: 3}
    hedge: {quantile: "95"}
    fault: {abort: {percent: 120}}
`

const authzDoc = `
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001}]
    authorization:
      rules: [{from: [checkout], paths: [/charge]}]
`

const actionsDoc = `
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001}]
    routes:
      - name: first
        match: {header: [{name: x-env, prefix: qa}]}
      - name: v1
        match: {path_prefix: /v1/, query_param: [{name: id}]}
        prefix_rewrite: /v2/
        request_headers: {add: {X-Tag: a}, set: {x-env: prod}, remove: [X-Debug]}
`

const invalidDoc = `
services:
  billing:
    retry: {attempts: 11}
    load_balancer: fastest
`

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.yaml")
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(valid, []byte(validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(invalid, []byte(invalidDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	deny := filepath.Join(dir, "deny.yaml")
	if err := os.WriteFile(deny, []byte("egress: deny\n"+validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	badEgress := filepath.Join(dir, "bad-egress.yaml")
	if err := os.WriteFile(badEgress, []byte("egress: closed\n"+validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	protected := filepath.Join(dir, "protected.yaml")
	if err := os.WriteFile(protected, []byte(protectedDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	badProtection := filepath.Join(dir, "bad-protection.yaml")
	if err := os.WriteFile(badProtection, []byte(badProtectionDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	authz := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(authz, []byte(authzDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	actions := filepath.Join(dir, "actions.yaml")
	if err := os.WriteFile(actions, []byte(actionsDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string
		wantErr    []string
		errorLines int // exact number of stderr lines, when > 0; -1: none
	}{
		{name: "no args", args: nil, wantCode: 2, wantErr: []string{"usage"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: []string{"unknown command"}},
		{name: "validate ok", args: []string{"validate", valid}, wantCode: 0, wantOut: []string{"valid", "cli-1", "1 services"}},
		{name: "validate invalid", args: []string{"validate", invalid}, wantCode: 1,
			wantErr: []string{"services.billing.retry.attempts: must be 1..10", "services.billing.load_balancer"}},
		{name: "validate missing file", args: []string{"validate", filepath.Join(dir, "nope.yaml")}, wantCode: 1, wantErr: []string{"nope.yaml"}},
		{name: "explain header route", args: []string{"explain", valid, "http://billing/x", "-H", "x-canary: true"}, wantCode: 0,
			wantOut: []string{"route:     canary-by-header", "split:     v2=100", "127.0.0.1:9002", "attempts:  3"}},
		{name: "explain POST", args: []string{"explain", valid, "http://billing/charge", "-X", "post"}, wantCode: 0,
			wantOut: []string{"route:     charge", "v1=90 v2=10", "attempts:  1", "timeout:   2s"}},
		{name: "explain json", args: []string{"explain", "--json", valid, "http://billing/charge", "-X", "POST"}, wantCode: 0,
			wantOut: []string{`"route": "charge"`, `"policy_version": "cli-1"`}},
		{name: "explain no route", args: []string{"explain", valid, "http://billing/refund"}, wantCode: 1,
			wantOut: []string{"fails at layer route"}, wantErr: []string{"mesh: route:"}},
		{name: "explain route actions", args: []string{"explain", actions, "http://billing/v1/a%2Fb?id=1", "-H", "x-env: staging"}, wantCode: 0,
			wantOut: []string{"route:     v1", "rewrite:   prefix to /v2/: sent as /v2/a%2Fb", "headers:   add x-tag: a; set x-env: prod; remove x-debug",
				`route      first: header x-env: prefix "qa" not matched (got "staging")`}},
		{name: "explain passthrough", args: []string{"explain", valid, "http://example.com/"}, wantCode: 0, wantOut: []string{"passthrough"}},
		{name: "validate egress deny", args: []string{"validate", deny}, wantCode: 0, wantOut: []string{"valid", "1 services"}},
		{name: "validate bad egress", args: []string{"validate", badEgress}, wantCode: 1, wantErr: []string{`egress: must be allow or deny, not "closed"`}},
		{name: "explain egress deny", args: []string{"explain", deny, "http://example.com/"}, wantCode: 1,
			wantOut: []string{"fails at layer egress"}, wantErr: []string{"mesh: egress:"}},
		{name: "explain host spelling", args: []string{"explain", valid, "http://BILLING.:8080/x", "-H", "x-canary: true"}, wantCode: 0,
			wantOut: []string{"service:   billing", "route:     canary-by-header"}},
		{name: "explain bad header", args: []string{"explain", valid, "http://billing/", "-H", "nocolon"}, wantCode: 2, wantErr: []string{"name:value"}},
		{name: "validate protections", args: []string{"validate", protected}, wantCode: 0, wantOut: []string{"valid"}},
		{name: "validate bad protections", args: []string{"validate", badProtection}, wantCode: 1, errorLines: 4, wantErr: []string{
			"services.billing.concurrency: set max or adaptive, not both",
			`services.billing.hedge.quantile: must be written p50 .. p99.9, as p95 or p99.9 (two digits, one decimal at most), got "95"`,
			"services.billing.fault.abort.percent: must be 0..100",
			"services.billing.circuit_breaker: set consecutive_failures or failure_rate, not both: they are two kinds of breaker",
		}},
		{name: "explain protections", args: []string{"explain", protected, "http://billing/x"}, wantCode: 0, wantOut: []string{
			"limit:     concurrency max 4, queue up to 25ms",
			"hedge:     up to 1 more attempt(s) after 20ms",
			"FAULT:     injection active: abort (HTTP 503, gRPC unavailable) on 5%, only with header x-inmesh-fault",
			"ratelimit: 100/s, burst 200, per calling service (enforced by billing's mesh)",
		}},
		{name: "explain invalid policy", args: []string{"explain", invalid, "http://billing/"}, wantCode: 1, wantErr: []string{"attempts"}},

		// Standard flag parsing: -h and --help print the command's usage to
		// stdout and exit 0, wherever they stand; an unknown flag exits 2
		// naming it.
		{name: "validate -h", args: []string{"validate", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh validate", "-o"}, errorLines: -1},
		{name: "validate --help after a file", args: []string{"validate", valid, "--help"}, wantCode: 0, wantOut: []string{"usage: inmesh validate"}, errorLines: -1},
		{name: "explain -h", args: []string{"explain", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh explain", "-as", "-H", "-X"}, errorLines: -1},
		{name: "diff -h", args: []string{"diff", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh diff", "diff(1)"}, errorLines: -1},
		{name: "push -h", args: []string{"push", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh push", "-consul", "-prefix"}, errorLines: -1},
		{name: "get -h", args: []string{"get", "--help"}, wantCode: 0, wantOut: []string{"usage: inmesh get", "-file"}, errorLines: -1},
		{name: "status -h", args: []string{"status", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh status", "-admin"}, errorLines: -1},
		{name: "version -h", args: []string{"version", "-h"}, wantCode: 0, wantOut: []string{"usage: inmesh version"}, errorLines: -1},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantOut: []string{"inmesh diff", "inmesh status", "inmesh version"}},
		{name: "validate unknown flag", args: []string{"validate", "--strict", valid}, wantCode: 2, wantErr: []string{"flag provided but not defined: -strict", "usage: inmesh validate"}},
		{name: "explain unknown flag after args", args: []string{"explain", valid, "http://billing/x", "-Z"}, wantCode: 2, wantErr: []string{"-Z"}},
		{name: "validate two files", args: []string{"validate", valid, valid}, wantCode: 2, wantErr: []string{"usage: inmesh validate"}},
		{name: "bad output format", args: []string{"validate", "-o", "yaml", valid}, wantCode: 2, wantErr: []string{`invalid value "yaml" for flag -o`}},
		{name: "validate a file named like a flag after --", args: []string{"validate", "--", "-h"}, wantCode: 1, wantErr: []string{"-h: open -h"}},

		// -o json.
		{name: "validate json", args: []string{"validate", "-o", "json", valid}, wantCode: 0,
			wantOut: []string{`"valid": true`, `"version": "cli-1"`, `"services": 1`, `"hash": "sha256:`}},
		{name: "validate json invalid", args: []string{"validate", invalid, "-o", "json"}, wantCode: 1, errorLines: -1,
			wantOut: []string{`"valid": false`, `"field": "services.billing.retry.attempts"`, `"message": "must be 1..10"`}},
		{name: "explain -o json", args: []string{"explain", "-o", "json", valid, "http://billing/charge", "-X", "POST"}, wantCode: 0,
			wantOut: []string{`"route": "charge"`, `"policy_version": "cli-1"`}},
		{name: "version", args: []string{"version"}, wantCode: 0, wantOut: []string{"inmesh ", "built with go1."}},
		{name: "version json", args: []string{"version", "-o", "json"}, wantCode: 0,
			wantOut: []string{`"module": "github.com/inmesh/inmesh"`, `"version": "`, `"go_version": "go1.`}},

		// explain --as: the authorization line is the named caller's.
		{name: "explain as default caller", args: []string{"explain", authz, "http://billing/charge"}, wantCode: 0,
			wantOut: []string{"authz:     denied by default", "(as caller inmesh-cli)"}},
		{name: "explain as checkout", args: []string{"explain", "--as", "checkout", authz, "http://billing/charge"}, wantCode: 0,
			wantOut: []string{"authz:     allowed by rules[0]", "(as caller checkout)"}},
		{name: "explain as checkout after args", args: []string{"explain", authz, "http://billing/charge", "--as=checkout", "-o", "json"}, wantCode: 0,
			wantOut: []string{`"authorization": "allowed by rules[0]"`}},
		{name: "explain says why", args: []string{"explain", valid, "http://billing/charge", "-X", "POST"}, wantCode: 0, wantOut: []string{
			"why:\n",
			"  route      canary-by-header: header x-canary",
			"  route      charge: first match\n",
			"  timeout    2s: timeout of service billing\n",
			"  attempts   1: POST is not idempotent",
		}},
		{name: "explain as nobody", args: []string{"explain", "--as", "", authz, "http://billing/charge"}, wantCode: 2, wantErr: []string{"--as"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out.String(), errOut.String())
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
			switch n := strings.Count(errOut.String(), "\n"); {
			case tc.errorLines < 0 && n != 0:
				t.Errorf("stderr is not empty:\n%s", errOut.String())
			case tc.errorLines > 0 && n != tc.errorLines:
				t.Errorf("stderr has %d lines, want %d:\n%s", n, tc.errorLines, errOut.String())
			}
		})
	}
}

// TestValidatePrintsOneLinePerProblem checks the contract of validate: one
// line per problem, each naming its field.
func TestValidatePrintsOneLinePerProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte(invalidDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d:\n%s", len(lines), errOut.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "services.billing.") {
			t.Errorf("line does not name its field: %q", l)
		}
	}
}

func TestPushAndGet(t *testing.T) {
	agent := consultest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(file, []byte(validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	// A stale service key that the file no longer has is removed by push.
	if _, err := agent.Client.KV().Put(&api.KVPair{Key: "inmesh/services/legacy", Value: []byte("{}")}, nil); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"push", file, "--consul", agent.HTTPAddr}, &out, &errOut); code != 0 {
		t.Fatalf("push: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "1 keys written, 1 removed") {
		t.Errorf("push said %q", out.String())
	}
	out.Reset()
	if code := run([]string{"get", "--consul", agent.HTTPAddr}, &out, &errOut); code != 0 {
		t.Fatalf("get: %d %s", code, errOut.String())
	}
	back := filepath.Join(dir, "back.json")
	if err := os.WriteFile(back, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := load(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := load(back)
	if err != nil {
		t.Fatalf("get printed an invalid document: %v\n%s", err, out.String())
	}
	// The version label stays out of KV; everything else round-trips.
	a.Doc.Version = ""
	ha, _ := policy.Hash(a.Doc)
	if ha != b.Hash {
		t.Fatalf("round trip changed the policy:\n%s", out.String())
	}

	// -o text prints YAML that reads back the same; -o FILE (the spelling
	// before -o took formats) and --file write the JSON document.
	for _, args := range [][]string{{"-o", "text"}, {"-o", filepath.Join(dir, "o.json")}, {"--file", filepath.Join(dir, "file.json")}} {
		out.Reset()
		errOut.Reset()
		if code := run(append([]string{"get", "--consul", agent.HTTPAddr}, args...), &out, &errOut); code != 0 {
			t.Fatalf("get %v: %d %s", args, code, errOut.String())
		}
		path := filepath.Join(dir, "back.yaml")
		if args[1] == "text" {
			if strings.Contains(out.String(), "{") {
				t.Errorf("get -o text printed flow style, not YAML blocks:\n%s", out.String())
			}
			if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		} else {
			path = args[1]
			if !strings.Contains(out.String(), "wrote "+path) {
				t.Errorf("get %v said %q", args, out.String())
			}
		}
		c, err := load(path)
		if err != nil {
			t.Fatalf("get %v wrote an invalid document: %v", args, err)
		}
		if c.Hash != b.Hash {
			t.Errorf("get %v: hash %s, want %s", args, c.Hash, b.Hash)
		}
	}

	// An invalid file is never written.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(invalidDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"push", bad, "--consul", agent.HTTPAddr}, &out, &errOut); code != 1 {
		t.Fatalf("push of an invalid file exited %d", code)
	}
}

// TestPushAndGetEgressDeny: egress and trust_domain travel in
// <prefix>/mesh; a push of a document without them removes that key.
func TestPushAndGetEgressDeny(t *testing.T) {
	agent := consultest.Start(t)
	dir := t.TempDir()
	deny := filepath.Join(dir, "deny.yaml")
	if err := os.WriteFile(deny, []byte("egress: deny\ntrust_domain: mesh.local\n"+validDoc[strings.Index(validDoc, "services:"):]), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"push", deny, "--consul", agent.HTTPAddr, "--prefix", "tenant"}, &out, &errOut); code != 0 {
		t.Fatalf("push: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "2 keys written, 0 removed") {
		t.Errorf("push said %q", out.String())
	}
	out.Reset()
	if code := run([]string{"get", "--consul", agent.HTTPAddr, "--prefix", "tenant"}, &out, &errOut); code != 0 {
		t.Fatalf("get: %d %s", code, errOut.String())
	}
	back := filepath.Join(dir, "back.json")
	if err := os.WriteFile(back, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := load(back)
	if err != nil {
		t.Fatalf("get printed an invalid document: %v\n%s", err, out.String())
	}
	if b.Doc.Egress != policy.EgressDeny || b.Doc.TrustDomain != "mesh.local" {
		t.Fatalf("egress %q, trust domain %q after the round trip", b.Doc.Egress, b.Doc.TrustDomain)
	}

	allow := filepath.Join(dir, "allow.yaml")
	if err := os.WriteFile(allow, []byte(validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"push", allow, "--consul", agent.HTTPAddr, "--prefix", "tenant"}, &out, &errOut); code != 0 {
		t.Fatalf("push: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "1 keys written, 1 removed") {
		t.Errorf("push said %q", out.String())
	}
	if kv, _, err := agent.Client.KV().Get("tenant/mesh", nil); err != nil || kv != nil {
		t.Fatalf("tenant/mesh after a push without global fields: %v %v", kv, err)
	}
}

// TestValidateRefusesEmptySubset: a subset that selects none of the static
// endpoints would black-hole its share of a canary.
func TestValidateRefusesEmptySubset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "canary.yaml")
	doc := `
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
    subsets: {v1: {version: v1}, v3: {version: v3}}
    routes: [{split: [{subset: v1, weight: 90}, {subset: v3, weight: 10}]}]
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q", code, out.String())
	}
	want := path + ": policy: services.billing.subsets.v3: selects none of the 2 endpoints\n"
	if errOut.String() != want {
		t.Fatalf("stderr %q, want %q", errOut.String(), want)
	}
}
