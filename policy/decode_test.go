package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // every one must be among the problems
	}{
		{"empty", "", []string{"empty document"}},
		{"blank", " \n\t\n", []string{"empty document"}},
		{"comment only", "# nothing\n", []string{"empty document"}},
		{"null root", "null", []string{`the document must be a mapping (of version, trust_domain, defaults, services), got null`}},
		{"list root", "[1, 2]", []string{`the document must be a mapping (of version, trust_domain, defaults, services), got a list`}},
		{"scalar root", "hello", []string{`the document must be a mapping (of version, trust_domain, defaults, services), got "hello"`}},
		{"two documents", "version: a\n---\nversion: b\n", []string{"more than one YAML document in the input"}},
		{"syntax", "services: {billing: [}", nil},
		{
			"unknown field",
			"services:\n  billing:\n    retry: {atempts: 3}\n",
			[]string{"services.billing.retry.atempts: unknown field"},
		},
		{"unknown top-level field", "verison: x\n", []string{"verison: unknown field"}},
		{"field names are case-sensitive", "services: {billing: {Timeout: 1s}}", []string{"services.billing.Timeout: unknown field"}},
		{
			"duplicate key",
			"services:\n  billing:\n    timeout: 1s\n    timeout: 2s\n",
			[]string{"services.billing.timeout: duplicate key (first at line 3)"},
		},
		{
			"duplicate service",
			"services:\n  billing: {}\n  billing: {}\n",
			[]string{"services.billing: duplicate key (first at line 2)"},
		},
		{"duplicate key in JSON", `{"version": "a", "version": "b"}`, []string{"version: duplicate key (first at line 1)"}},
		{
			"integer expected",
			"services: {billing: {retry: {attempts: three}}}",
			[]string{`services.billing.retry.attempts: expected an integer, got "three"`},
		},
		{
			"integer not float",
			"services: {billing: {retry: {attempts: 2.5}}}",
			[]string{`services.billing.retry.attempts: expected an integer, got "2.5"`},
		},
		{
			"quoted integer",
			`services: {billing: {retry: {attempts: "3"}}}`,
			[]string{`services.billing.retry.attempts: expected an integer, got "3"`},
		},
		{
			"integer out of range",
			"services: {billing: {retry: {attempts: 99999999999999999999}}}",
			[]string{`services.billing.retry.attempts: expected an integer, got "99999999999999999999"`},
		},
		{
			"bool expected",
			"services: {billing: {retry: {non_idempotent: maybe}}}",
			[]string{`services.billing.retry.non_idempotent: expected true or false, got "maybe"`},
		},
		{
			"number expected",
			"services: {billing: {retry: {budget: {ratio: lots}}}}",
			[]string{`services.billing.retry.budget.ratio: expected a number, got "lots"`},
		},
		{
			"not a number",
			"services: {billing: {retry: {budget: {ratio: .nan}}}}",
			[]string{`services.billing.retry.budget.ratio: expected a finite number, got .nan`},
		},
		{
			"bad duration",
			`services: {billing: {timeout: "2 s"}}`,
			[]string{`services.billing.timeout: invalid duration "2 s"`},
		},
		{
			"bare number duration",
			"services: {billing: {timeout: 250}}",
			[]string{`services.billing.timeout: invalid duration 250: a number needs a unit; write e.g. "250ms"`},
		},
		{
			"bare zero duration",
			"services: {billing: {timeout: 0}}",
			[]string{`services.billing.timeout: invalid duration 0: a number needs a unit; write e.g. "250ms"`},
		},
		{
			"quoted number duration",
			`services: {billing: {retry: {per_try_timeout: "250"}}}`,
			[]string{`services.billing.retry.per_try_timeout: invalid duration "250": a number needs a unit; write e.g. "250ms"`},
		},
		{
			"duration as a mapping",
			"services: {billing: {timeout: {s: 1}}}",
			[]string{`services.billing.timeout: expected a duration such as "250ms", got a mapping`},
		},
		{
			"string expected",
			"services: {billing: {load_balancer: [a]}}",
			[]string{"services.billing.load_balancer: expected a string, got a list"},
		},
		{
			"list expected",
			"services: {billing: {endpoints: {address: 127.0.0.1:80}}}",
			[]string{"services.billing.endpoints: expected a list, got a mapping"},
		},
		{
			"mapping expected",
			"services: {billing: [1]}",
			[]string{"services.billing: expected a mapping, got a list"},
		},
		{
			"services must be a mapping",
			"services: [billing]",
			[]string{"services: expected a mapping, got a list"},
		},
		{
			"path through lists",
			"services:\n  billing:\n    routes:\n      - name: a\n      - split: [{subset: v1, weight: heavy}]\n",
			[]string{`services.billing.routes[1].split[0].weight: expected an integer, got "heavy"`},
		},
		{
			"key with a dot is quoted",
			"services: {billing.v2: {timeot: 1s}}",
			[]string{`services["billing.v2"].timeot: unknown field`},
		},
		{
			"non-string key",
			"services: {[a]: {}}",
			[]string{"services: a key must be a string, got a list (line 1)"},
		},
		{
			"null key",
			"services: {~: {}}",
			[]string{"services: a key must be a string, got null (line 1)"},
		},
		{
			"custom tag",
			"version: !custom x",
			[]string{`version: expected a string, got !custom "x"`},
		},
		{
			"binary tag",
			"version: !!binary aGVsbG8=",
			[]string{`version: expected a string, got !!binary "aGVsbG8="`},
		},
		{
			"all problems are reported",
			"services:\n  billing:\n    timeout: soon\n    retry: {attempts: x, bogus: 1}\n  shipping:\n    tls: [strict]\n",
			[]string{
				`services.billing.timeout: invalid duration "soon"`,
				`services.billing.retry.attempts: expected an integer, got "x"`,
				"services.billing.retry.bogus: unknown field",
				"services.shipping.tls: expected a string, got a list",
			},
		},
		{
			"merge of a scalar",
			"defaults: {<<: 1}",
			[]string{`defaults["<<"]: a merge key needs a mapping or a list of mappings, got "1"`},
		},
		{
			"merge of itself",
			"defaults: &d {<<: *d}",
			[]string{`defaults["<<"]: a merge key refers to its own mapping`},
		},
		{
			"unknown field through a merge",
			"services: {a: &a {timeout: 1s, bogus: 1}, b: {<<: *a}}",
			[]string{"services.a.bogus: unknown field", "services.b.bogus: unknown field"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse([]byte(tt.in))
			if doc != nil {
				t.Errorf("Parse returned a document with an error")
			}
			got := problemsOf(t, err)
			if tt.want == nil { // only check it is a YAML error
				if len(got) != 1 || !strings.HasPrefix(got[0], "invalid YAML: ") {
					t.Errorf("got %q, want one invalid YAML problem", got)
				}
				return
			}
			for _, w := range tt.want {
				wantProblem(t, err, w)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d problems, want %d:\n  %s", len(got), len(tt.want), strings.Join(got, "\n  "))
			}
		})
	}
}

func TestParseErrorFormat(t *testing.T) {
	_, err := Parse([]byte("services:\n  billing:\n    retry: {atempts: 3, attempts: 11}\n"))
	want := "policy: services.billing.retry.atempts: unknown field"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	_, err = Parse([]byte("services:\n  billing:\n    retry: {attempts: 11}\n    timeout: -1s\n"))
	want = "policy: services.billing.timeout: must be > 0, got -1s\npolicy: services.billing.retry.attempts: must be 1..10"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	var fe FieldError
	if !errors.As(err, &fe) || fe.Path != "services.billing.timeout" {
		t.Errorf("errors.As(FieldError) = %+v", fe)
	}
	if !errors.Is(fe, ErrInvalid) {
		t.Error("a FieldError is not ErrInvalid")
	}
	if got := (FieldError{Msg: "empty document"}).Error(); got != "policy: empty document" {
		t.Errorf("FieldError without path: %q", got)
	}
}

func TestParseAliasBomb(t *testing.T) {
	// 100 services sharing one service of 100 routes sharing one route of a
	// 100-entry split: 10^6 split entries once aliases are expanded, from a
	// few kilobytes of YAML.
	var b strings.Builder
	b.WriteString("services:\n  s0: &s\n    routes: [&r {split: [&w {subset: v, weight: 1}")
	b.WriteString(strings.Repeat(", *w", 99))
	b.WriteString("]}")
	b.WriteString(strings.Repeat(", *r", 99))
	b.WriteString("]\n")
	for i := 1; i < 100; i++ {
		fmt.Fprintf(&b, "  s%d: *s\n", i)
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()))
	if got := problemsOf(t, err); len(got) != 1 || got[0] != fmt.Sprintf("document too large: more than %d YAML nodes once aliases are expanded", maxNodes) {
		t.Errorf("problems = %q", got)
	}
	if d := time.Since(start); d > 10*time.Second { // a liveness bound, not a timing assertion
		t.Errorf("Parse took %v", d)
	}
}

func TestParseAliasesAndMerge(t *testing.T) {
	doc := mustParse(t, `
services:
  billing: &common
    timeout: 2s
    retry: &retry {attempts: 3}
  shipping:
    <<: *common
    timeout: 1s
  ledger:
    <<: [{load_balancer: random}, *common]
    retry: *retry
`)
	s := doc.Services["shipping"]
	if s.Timeout.Std() != time.Second || s.Retry == nil || s.Retry.Attempts != 3 {
		t.Errorf("shipping = %+v", s)
	}
	l := doc.Services["ledger"]
	if l.LoadBalancer != "random" || l.Timeout.Std() != 2*time.Second || l.Retry.Attempts != 3 {
		t.Errorf("ledger = %+v", l)
	}
	if l.Retry == doc.Services["billing"].Retry {
		t.Error("an alias shares memory between fields")
	}
}

func TestParseNullMeansUnset(t *testing.T) {
	doc := mustParse(t, `
defaults:
services:
  billing:
  shipping:
    timeout: ~
    retry:
      retry_on: null
`)
	if doc.Defaults != nil {
		t.Errorf("defaults = %+v, want nil", doc.Defaults)
	}
	if s := doc.Services["billing"]; s == nil || !reflect.DeepEqual(*s, Service{}) {
		t.Errorf("billing = %+v, want an empty service", s)
	}
	s := doc.Services["shipping"]
	if s.Timeout != 0 || s.Retry == nil || s.Retry.RetryOn != nil {
		t.Errorf("shipping = %+v", s)
	}
}

func TestParseExplicitEmptyList(t *testing.T) {
	doc := mustParse(t, "services: {billing: {retry: {attempts: 3, retry_on: []}}}")
	r := doc.Services["billing"].Retry.RetryOn
	if r == nil || len(r) != 0 {
		t.Fatalf("retry_on = %#v, want an empty non-nil list", r)
	}
	// It survives encoding: an empty list means "retry on nothing".
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"retry_on":[]`) {
		t.Errorf("JSON %s lacks retry_on: []", data)
	}
	again := mustParse(t, string(data))
	if r := again.Services["billing"].Retry.RetryOn; r == nil {
		t.Error("retry_on: [] lost in the JSON round trip")
	}
}

func TestParseScalarsAsStrings(t *testing.T) {
	doc := mustParse(t, `
version: 2026-11-26
services:
  billing:
    subsets: {v1: {version: 1}}
    routes:
      - match: {headers: {x-canary: true}}
        retry: {attempts: 2, retry_on: [502, 503, unavailable]}
        split: [{subset: v1, weight: 1}]
`)
	if doc.Version != "2026-11-26" {
		t.Errorf("version = %q", doc.Version)
	}
	b := doc.Services["billing"]
	if got := b.Subsets["v1"]["version"]; got != "1" {
		t.Errorf("label = %q", got)
	}
	if got := b.Routes[0].Match.Headers["x-canary"]; got != "true" {
		t.Errorf("header = %q", got)
	}
	if got := b.Routes[0].Retry.RetryOn; !reflect.DeepEqual(got, []string{"502", "503", "unavailable"}) {
		t.Errorf("retry_on = %q", got)
	}
}

func TestParseNumbers(t *testing.T) {
	doc := mustParse(t, `services: {billing: {retry: {attempts: 0x3, budget: {ratio: 0, min_per_second: 1_000}}}}`)
	r := doc.Services["billing"].Retry
	if r.Attempts != 3 || r.Budget.Ratio == nil || *r.Budget.Ratio != 0 || *r.Budget.MinPerSecond != 1000 {
		t.Errorf("retry = %+v, budget %v %v", r, *r.Budget.Ratio, *r.Budget.MinPerSecond)
	}
	doc = mustParse(t, `services: {billing: {retry: {budget: {ratio: -0.0}}}}`)
	if f := *doc.Services["billing"].Retry.Budget.Ratio; f != 0 || 1/f < 0 {
		t.Errorf("ratio -0 read as %v, want +0", f)
	}
}

func TestParseJSONAndYAMLAgree(t *testing.T) {
	yamlDoc := mustParse(t, string(readTestdata(t, "design.yaml")))
	data, err := json.MarshalIndent(yamlDoc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	jsonDoc := mustParse(t, string(data))
	if !reflect.DeepEqual(yamlDoc, jsonDoc) {
		t.Errorf("YAML and JSON documents differ:\n%+v\n%+v", yamlDoc, jsonDoc)
	}
	jsonFile := mustParse(t, string(readTestdata(t, "design.json")))
	if !reflect.DeepEqual(yamlDoc, jsonFile) {
		t.Errorf("testdata/design.json differs from design.yaml")
	}
	h1, _ := Hash(yamlDoc)
	h2, _ := Hash(jsonFile)
	if h1 != h2 {
		t.Errorf("hash of YAML %s != hash of JSON %s", h1, h2)
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Std() != 90*time.Second {
		t.Errorf("UnmarshalText(1m30s) = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("90")); err == nil || !strings.Contains(err.Error(), `write e.g. "250ms"`) {
		t.Errorf("UnmarshalText(90) = %v", err)
	}
	b, _ := json.Marshal(Duration(250 * time.Millisecond))
	if string(b) != `"250ms"` {
		t.Errorf("MarshalJSON = %s", b)
	}
	var doc Document
	if err := json.Unmarshal([]byte(`{"services":{"b":{"timeout":"2s"}}}`), &doc); err != nil || doc.Services["b"].Timeout.Std() != 2*time.Second {
		t.Errorf("encoding/json decode: %v %+v", err, doc)
	}
}

func TestParseJSONEscapes(t *testing.T) {
	in := "{\n\t\"version\": \"caf\\u00e9 \\ud83d\\ude00 \\/ \u2028 \\\"q\\\" \\\\ \\ud800\",\n" +
		"\t\"services\": {\"billing\": {\"routes\": [{\"match\": {\"path_prefix\": \"\\/charge\"}}]}}\n}"
	doc := mustParse(t, in)
	var want struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	if doc.Version != want.Version {
		t.Errorf("version = %q, want %q (as encoding/json reads it)", doc.Version, want.Version)
	}
	if got := doc.Services["billing"].Routes[0].Match.PathPrefix; got != "/charge" {
		t.Errorf("path_prefix = %q", got)
	}
	// Errors keep their JSON line numbers.
	_, err := Parse([]byte("{\n\"services\": {\"b\\/\": {},\n\"b/\": {}}}"))
	wantProblem(t, err, `services["b/"]: duplicate key (first at line 2)`)
}

// A mapping whose keys are not all distinct strings is decoded through its
// entries, whatever its length; one that is, in place. Both report the
// same problems.
func TestParseLongMappings(t *testing.T) {
	services := func(n int, extra string) string {
		var b strings.Builder
		b.WriteString("services:\n")
		for i := range n {
			fmt.Fprintf(&b, "  s%d: {}\n", i)
		}
		return b.String() + extra
	}
	tests := []struct {
		name, in string
		want     []string
	}{
		{"duplicate, short", services(3, "  s1: {}\n"), []string{"services.s1: duplicate key (first at line 3)"}},
		{"duplicate, long", services(30, "  s7: {timeout: 1}\n  s8: {}\n"), []string{"services.s7: duplicate key (first at line 9)", "services.s8: duplicate key (first at line 10)"}},
		{"null key, long", services(30, "  ~: {}\n  s0: {}\n"), []string{"services: a key must be a string, got null (line 32)", "services.s0: duplicate key (first at line 2)"}},
		{"unknown field, long", services(30, "  s30: {tiemout: 1s}\n"), []string{"services.s30.tiemout: unknown field"}},
		{"merge into a long mapping", "base: &b {timeout: 1s, retry: {attempts: 2}}\n" + services(20, "  s20:\n    <<: *b\n    timeout: 2\n"),
			[]string{"base: unknown field", `services.s20.timeout: invalid duration 2: a number needs a unit; write e.g. "250ms"`}},
		{"merged services", "services:\n  <<:\n" + strings.ReplaceAll(services(20, "  b: {tiemout: 1s}\n")[len("services:\n"):], "  s", "    s") + "  c: {}\n",
			[]string{"services.b.tiemout: unknown field"}},
		{"duplicate in JSON, long", `{"services": {` + strings.Repeat(`"a": {}, `, 1) + strings.Repeat(`"b": {}, `, 20) + `"c": {}}}`,
			[]string{"services.b: duplicate key (first at line 1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			got := problemsOf(t, err)
			if len(got) < len(tt.want) || strings.Join(got[:len(tt.want)], "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n  %s\nwant first:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

// The decoder and the validator write paths as join and index do.
func TestPathBytesAreJoinAndIndex(t *testing.T) {
	for _, base := range []string{"", "services", `services["a.b"]`, "x[3]"} {
		for _, key := range []string{"a", "billing-2_x", "", "a.b", "é", "a b", `"`, "[0]", "<<", "\x00"} {
			if got, want := string(appendKey([]byte(base), key)), join(base, key); got != want {
				t.Errorf("appendKey(%q, %q) = %q, join = %q", base, key, got, want)
			}
		}
		for _, i := range []int{0, 7, 12345} {
			if got, want := string(appendIndex([]byte(base), i)), index(base, i); got != want {
				t.Errorf("appendIndex(%q, %d) = %q, index = %q", base, i, got, want)
			}
		}
	}
}
