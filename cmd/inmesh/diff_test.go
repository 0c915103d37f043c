package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/internal/consultest"
)

// Five services; b and e change: b in its own retry, e through the
// defaults' timeout, which the other four override.
const diffA = `
version: r1
defaults: {timeout: 1s}
services:
  a: {endpoints: [{address: 127.0.0.1:9001}], timeout: 2s}
  b: {endpoints: [{address: 127.0.0.1:9002}], timeout: 2s, retry: {attempts: 2}}
  c: {endpoints: [{address: 127.0.0.1:9003}], timeout: 2s}
  d: {endpoints: [{address: 127.0.0.1:9004}], timeout: 2s}
  e: {endpoints: [{address: 127.0.0.1:9005}]}
`

// diffB is diffA written as JSON, in another order, with the two changes.
const diffB = `{
  "version": "r2",
  "services": {
    "e": {"endpoints": [{"address": "127.0.0.1:9005"}]},
    "d": {"endpoints": [{"address": "127.0.0.1:9004"}], "timeout": "2000ms"},
    "c": {"endpoints": [{"address": "127.0.0.1:9003"}], "timeout": "2s"},
    "b": {"endpoints": [{"address": "127.0.0.1:9002"}], "timeout": "2s", "retry": {"attempts": 3}},
    "a": {"endpoints": [{"address": "127.0.0.1:9001"}], "timeout": "2s"}
  },
  "defaults": {"timeout": "5s"}
}`

// diffAJSON is diffA as JSON: the same policy.
const diffAJSON = `{"version": "r1", "defaults": {"timeout": "1000ms"}, "services": {
  "e": {"endpoints": [{"address": "127.0.0.1:9005"}]},
  "a": {"endpoints": [{"address": "127.0.0.1:9001"}], "timeout": "2s"},
  "b": {"endpoints": [{"address": "127.0.0.1:9002"}], "timeout": "2s", "retry": {"attempts": 2}},
  "c": {"endpoints": [{"address": "127.0.0.1:9003"}], "timeout": "2s"},
  "d": {"endpoints": [{"address": "127.0.0.1:9004"}], "timeout": "2s"}}}`

// A canary moves, an endpoint and a service come, a service goes, egress
// closes.
const diffRoutesA = `
version: r1
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}, {address: 127.0.0.1:9002, labels: {version: v2}}]
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: charge
        match: {path_prefix: /charge}
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
      - {name: rest}
  legacy: {endpoints: [{address: 127.0.0.1:9009}]}
`

const diffRoutesB = `
version: r1
egress: deny
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
      - {address: 127.0.0.1:9003, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: charge
        match: {path_prefix: /charge}
        split: [{subset: v1, weight: 50}, {subset: v2, weight: 50}]
      - {name: rest}
  users: {endpoints: [{address: 127.0.0.1:9010}]}
`

func writeFiles(t *testing.T, docs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, doc := range docs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDiff(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": diffA, "b.json": diffB, "a.json": diffAJSON,
		"ra.yaml": diffRoutesA, "rb.yaml": diffRoutesB, "bad.yaml": invalidDoc,
	})
	f := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // in this order
		notOut   []string
		wantErr  []string
	}{
		{name: "two of five", args: []string{"diff", f("a.yaml"), f("b.json")}, wantCode: 1, wantOut: []string{
			"version: r1 → r2\n",
			"~ b\n    effective.attempts: 2 → 3\n",
			"~ e\n    effective.timeout: 1s → 5s\n",
			"2 services change: 2 changed, 0 added, 0 removed\n",
		}, notOut: []string{"~ a", "~ c", "~ d", "defaults"}},
		{name: "equal", args: []string{"diff", f("a.yaml"), f("a.json")}, wantCode: 0, wantOut: []string{"resolve to the same policy: no change"},
			notOut: []string{"~", "→"}},
		{name: "routes endpoints services", args: []string{"diff", f("ra.yaml"), f("rb.yaml")}, wantCode: 1, wantOut: []string{
			"egress: allow → deny\n",
			"~ billing\n",
			`    endpoints[127.0.0.1:9003]: (none) → {"address":"127.0.0.1:9003","labels":{"version":"v2"}}` + "\n",
			"    routes[charge].split[0].weight: 90 → 50\n",
			"    routes[charge].split[1].weight: 10 → 50\n",
			"- legacy (removed)\n",
			"+ users (added)\n",
		}, notOut: []string{"version:", "routes[rest]"}},
		{name: "flags after the files", args: []string{"diff", f("a.yaml"), f("a.json"), "-o", "text"}, wantCode: 0},
		{name: "one file", args: []string{"diff", f("a.yaml")}, wantCode: 2, wantErr: []string{"usage: inmesh diff"}},
		{name: "invalid document", args: []string{"diff", f("a.yaml"), f("bad.yaml")}, wantCode: 2, wantErr: []string{"services.billing.retry.attempts"}},
		{name: "missing file", args: []string{"diff", f("nope.yaml"), f("a.yaml")}, wantCode: 2, wantErr: []string{"nope.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out.String(), errOut.String())
			}
			rest := out.String()
			for _, w := range tc.wantOut {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in this order):\n%s", w, out.String())
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tc.notOut {
				if strings.Contains(out.String(), w) {
					t.Errorf("stdout has %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
		})
	}
}

// TestDiffJSON pins the structure of diff -o json.
func TestDiffJSON(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.yaml": diffA, "b.json": diffB, "a.json": diffAJSON, "ra.yaml": diffRoutesA, "rb.yaml": diffRoutesB})
	type change struct {
		Path string `json:"path"`
		Old  any    `json:"old"`
		New  any    `json:"new"`
	}
	type service struct {
		Name   string   `json:"name"`
		Change string   `json:"change"`
		Fields []change `json:"fields"`
	}
	type result struct {
		A, B struct {
			File, Version, Hash string
		}
		Equal    bool      `json:"equal"`
		Fields   []change  `json:"fields"`
		Services []service `json:"services"`
	}
	diffJSON := func(a, b string, wantCode int) result {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run([]string{"diff", "-o", "json", filepath.Join(dir, a), filepath.Join(dir, b)}, &out, &errOut); code != wantCode {
			t.Fatalf("exit %d, want %d: %s", code, wantCode, errOut.String())
		}
		var r result
		dec := json.NewDecoder(&out)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("decoding %s: %v", out.String(), err)
		}
		return r
	}

	r := diffJSON("a.yaml", "b.json", 1)
	want := []service{
		{Name: "b", Change: "changed", Fields: []change{{Path: "effective.attempts", Old: 2.0, New: 3.0}}},
		{Name: "e", Change: "changed", Fields: []change{{Path: "effective.timeout", Old: "1s", New: "5s"}}},
	}
	if r.Equal || !reflect.DeepEqual(r.Services, want) {
		t.Errorf("services %+v, want %+v", r.Services, want)
	}
	if wantTop := []change{{Path: "version", Old: "r1", New: "r2"}}; !reflect.DeepEqual(r.Fields, wantTop) {
		t.Errorf("fields %+v, want %+v", r.Fields, wantTop)
	}
	if r.A.Version != "r1" || r.B.Version != "r2" || !strings.HasPrefix(r.A.Hash, "sha256:") || r.A.Hash == r.B.Hash {
		t.Errorf("sides %+v %+v", r.A, r.B)
	}

	r = diffJSON("a.yaml", "a.json", 0)
	if !r.Equal || len(r.Services) != 0 || len(r.Fields) != 0 || r.Services == nil || r.Fields == nil {
		t.Errorf("equal documents: %+v", r)
	}

	r = diffJSON("ra.yaml", "rb.yaml", 1)
	var got []string
	for _, s := range r.Services {
		got = append(got, s.Change+" "+s.Name)
	}
	if want := []string{"changed billing", "removed legacy", "added users"}; !reflect.DeepEqual(got, want) {
		t.Errorf("services %v, want %v", got, want)
	}
	added := r.Services[0].Fields[0]
	wantEp := map[string]any{"address": "127.0.0.1:9003", "labels": map[string]any{"version": "v2"}}
	if added.Path != "endpoints[127.0.0.1:9003]" || added.Old != nil || !reflect.DeepEqual(added.New, wantEp) {
		t.Errorf("added endpoint %+v", added)
	}
}

// TestDiffConsul: consul: is the policy in KV, so diff says what a push
// would change, and nothing after it.
func TestDiffConsul(t *testing.T) {
	agent := consultest.Start(t)
	dir := writeFiles(t, map[string]string{"a.yaml": diffA, "b.json": diffB})
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.json")
	var out, errOut bytes.Buffer
	if code := run([]string{"push", a, "--consul", agent.HTTPAddr, "--prefix", "tenant"}, &out, &errOut); code != 0 {
		t.Fatalf("push: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"diff", "consul:" + agent.HTTPAddr, b, "--prefix", "tenant"}, &out, &errOut); code != 1 {
		t.Fatalf("diff before the push: exit %d: %s%s", code, out.String(), errOut.String())
	}
	for _, w := range []string{"~ b\n    effective.attempts: 2 → 3\n", "~ e\n    effective.timeout: 1s → 5s\n", "2 services change"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("diff lacks %q:\n%s", w, out.String())
		}
	}
	if code := run([]string{"push", b, "--consul", agent.HTTPAddr, "--prefix", "tenant"}, &out, &errOut); code != 0 {
		t.Fatalf("push: %d %s", code, errOut.String())
	}
	out.Reset()
	// The label stays out of KV: only the version differs after the push.
	if code := run([]string{"diff", "--consul", agent.HTTPAddr, "--prefix", "tenant", "-o", "json", "consul:", b}, &out, &errOut); code != 1 {
		t.Fatalf("diff after the push: exit %d: %s%s", code, out.String(), errOut.String())
	}
	var r diffResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Services) != 0 || len(r.Fields) != 1 || r.Fields[0].Path != "version" || r.Fields[0].New != "r2" {
		t.Errorf("after the push: %s", out.String())
	}
	errOut.Reset()
	if code := run([]string{"diff", "consul:127.0.0.1:1", b}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "consul:127.0.0.1:1: reading inmesh/ from Consul") {
		t.Errorf("unreachable agent: exit %d: %s", code, errOut.String())
	}
}
