package policy

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// fleetYAML is a fleet of n services, each with an endpoint and a subset.
func fleetYAML(n int) []byte {
	var b strings.Builder
	b.WriteString("version: fleet\nservices:\n")
	for i := range n {
		fmt.Fprintf(&b, "  svc-%05d:\n    endpoints:\n      - address: 10.%d.%d.%d:8080\n        labels: {version: v1}\n    subsets:\n      v1: {version: v1}\n",
			i, i>>16&255, i>>8&255, i&255)
	}
	return []byte(b.String())
}

// fleetJSON is fleetYAML(n) in JSON.
func fleetJSON(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"version": "fleet", "services": {`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `  "svc-%05d": {"endpoints": [{"address": "10.%d.%d.%d:8080", "labels": {"version": "v1"}}], "subsets": {"v1": {"version": "v1"}}}`,
			i, i>>16&255, i>>8&255, i&255)
	}
	b.WriteString("}}\n")
	return []byte(b.String())
}

// raceEnabled reports whether the race detector is on: it makes the code it
// instruments allocate more than the costs measured without it.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// allocated returns the bytes f allocates and how long it takes.
func allocated(f func()) (uint64, time.Duration) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, d
}

// A fleet of 20,000 services is accepted, in YAML and in JSON, and Parse and
// NewSnapshot stay within bounds of what they allocate.
func TestParseFleetOf20000Services(t *testing.T) {
	if testing.Short() {
		t.Skip("parses two 2.5 MB documents")
	}
	// The bounds are about 110% of what was measured: 99 MB (YAML) and
	// 92 MB (JSON) for Parse, of which the YAML parser's tree is 75 MB
	// and 69 MB and the document 23 MB; 35 MB for NewSnapshot (23 MB of
	// it the document's copy).
	tests := []struct {
		name            string
		data            []byte
		parse, snapshot uint64
	}{
		{"YAML", fleetYAML(20000), 104 << 20, 40 << 20},
		{"JSON", fleetJSON(20000), 97 << 20, 40 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc *Document
			var err error
			bytes, took := allocated(func() { doc, err = Parse(tc.data) })
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(doc.Services) != 20000 {
				t.Fatalf("%d services, want 20000", len(doc.Services))
			}
			t.Logf("%d bytes, %d nodes at most: parsed in %v, %.1f MB allocated", len(tc.data), countNodes(tc.data, 1<<40), took, float64(bytes)/1e6)
			if bytes > tc.parse {
				t.Errorf("Parse allocated %.1f MB, want at most %.1f MB", float64(bytes)/1e6, float64(tc.parse)/1e6)
			}

			var snap *Snapshot
			snapBytes, took := allocated(func() { snap, err = NewSnapshot(doc, "test") })
			if err != nil {
				t.Fatalf("NewSnapshot: %v", err)
			}
			if len(snap.Services) != 20000 {
				t.Fatalf("%d resolved services, want 20000", len(snap.Services))
			}
			t.Logf("snapshot made in %v, %.1f MB allocated", took, float64(snapBytes)/1e6)
			if snapBytes > tc.snapshot {
				t.Errorf("NewSnapshot allocated %.1f MB, want at most %.1f MB", float64(snapBytes)/1e6, float64(tc.snapshot)/1e6)
			}
		})
	}
}

// Hostile documents are refused with a clear error, in bounded memory: no
// input makes the parser build more than maxNodes nodes.
func TestParseRefusesHostileDocumentsCheaply(t *testing.T) {
	// 100 services sharing one of 100 routes sharing one 100-entry split:
	// 10^6 nodes once aliases are expanded, from 4 kB of YAML.
	var bomb strings.Builder
	bomb.WriteString("services:\n  s0: &s\n    routes: [&r {split: [&w {subset: v, weight: 1}" + strings.Repeat(", *w", 99) + "]}" + strings.Repeat(", *r", 99) + "]\n")
	for i := 1; i < 100; i++ {
		fmt.Fprintf(&bomb, "  s%d: *s\n", i)
	}
	huge := "version: x\nservices:\n" + strings.Repeat("  # a comment line to make the document larger\n", 50<<20/48)
	tests := []struct {
		name string
		doc  string
		want string // the problem, exactly
		max  uint64 // bytes Parse may allocate
	}{
		{"50 MB", huge, fmt.Sprintf("document too large: %d bytes, at most 8388608 (8 MiB)", len(huge)), 1 << 20},
		{"long string", "version: " + strings.Repeat("v", 9<<20), "document too large: 9437193 bytes, at most 8388608 (8 MiB)", 1 << 20},
		{"long string within the size limit", "version: " + strings.Repeat("v", 8<<20-20),
			"version: must be at most 256 characters, without control characters", 100 << 20},
		{"nested 100k levels, flow", "services: " + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000),
			"invalid YAML: exceeded max depth of 10000", 20 << 20},
		{"nested 100k levels, block", "services:\n" + strings.Repeat("- ", 100_000) + "x", "invalid YAML: line 2: exceeded max depth of 10000", 20 << 20},
		{"alias bomb", bomb.String(), fmt.Sprintf("document too large: more than %d YAML nodes once aliases are expanded", maxNodes), 50 << 20},
		{"dense flow sequence", "services: [" + strings.Repeat("1,", 3<<20) + "1]", fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes), 1 << 20},
		{"dense flow mapping", "services: {" + strings.Repeat("a,", 3<<20) + "a}", fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes), 1 << 20},
		{"dense block sequence", "services:\n" + strings.Repeat("- \n", 2<<20), fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes), 1 << 20},
		{"dense JSON", `{"services": [` + strings.Repeat("1,", 3<<20) + "1]}", fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes), 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.doc)
			var err error
			bytes, took := allocated(func() { _, err = Parse(data) })
			t.Logf("%d bytes: refused in %v, %.1f MB allocated: %.120v", len(data), took, float64(bytes)/1e6, err)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != "" {
				if got := problemsOf(t, err); got[0] != tc.want {
					t.Errorf("first problem %q, want %q", got[0], tc.want)
				}
			}
			if bytes > tc.max {
				t.Errorf("Parse allocated %.1f MB, want at most %.1f MB", float64(bytes)/1e6, float64(tc.max)/1e6)
			}
		})
	}
}

func TestParseListsAtMost100Problems(t *testing.T) {
	_, err := Parse([]byte("services:\n" + strings.Repeat("  x: {tiemout: 1s}\n", 1) + "  y: {" + strings.Repeat("a,", 500) + "a}\n"))
	got := problemsOf(t, err)
	if len(got) != maxProblems+1 || !strings.HasPrefix(got[maxProblems], "and ") || !strings.HasSuffix(got[maxProblems], " more problems") {
		t.Fatalf("%d problems, last %q; want %d and a count of the rest", len(got), got[len(got)-1], maxProblems+1)
	}
}

// countNodes never counts fewer nodes than the YAML parser builds, for
// random texts made of YAML's structural pieces.
func TestCountNodesIsAnUpperBound(t *testing.T) {
	alphabet := []string{
		"a", "b", ":", ": ", "- ", "-", "\n", "\n  ", "\n    ", " ", "[", "]", "{", "}", ",", ", ", "?", "? ",
		"\"", "'", "#", "|", ">", "&x ", "*x", "!!str ", "---\n", "\t", "1", "x: ", "\n- ", "\n  - ", "\n  a: ",
	}
	seed := uint64(1)
	next := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	parsed := 0
	for range 200_000 {
		var b strings.Builder
		for range 1 + next(30) {
			b.WriteString(alphabet[next(len(alphabet))])
		}
		real := parsedNodes(b.String())
		if real > 0 {
			parsed++
		}
		if got := countNodes([]byte(b.String()), 1<<40); got < real {
			t.Fatalf("countNodes = %d, the parser built %d nodes for %q", got, real, b.String())
		}
	}
	t.Logf("%d texts the parser read", parsed)
}

// parsedNodes returns the nodes the YAML parser builds for the first two
// documents of s (Parse decodes two at most).
func parsedNodes(s string) int {
	dec := yaml.NewDecoder(strings.NewReader(s))
	n := 0
	for range 2 {
		var doc yaml.Node
		if dec.Decode(&doc) != nil {
			break
		}
		n += countTree(&doc)
	}
	return n
}

// countNodes never counts fewer nodes than the YAML parser builds.
func FuzzCountNodes(f *testing.F) {
	files, _ := filepath.Glob("testdata/*")
	for _, name := range files {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"a: b\nc: d\n", "a:\n  b: 1\nc:\n- x\n- y\n", "- a: 1\n  b: 2\n- c: 3\n", "- - a\n- - b\n",
		"[a: 1, b: 2, c]", "{a, b: , c: d}", "[\n a: 1,\n b: 2\n]", "[\n a: 1\n , b: 2]", "{\n a: 1,\n b\n}",
		"a: |\n  b: 1\n  c: 2\nd: 1\n", "a: \"x\n  k: v\"\nb: 1\n", "? a\n: b\n? c\n", "a: &x {b: 1}\nc: *x\n",
		"- \n- \n-\n", "a:\n# - x\n  - y\n", "---\na: 1\n---\nb: 2\n", "a:\n\t- x\n", "[\"a\":1, \"b\":2]",
		"a: [b: [c: [d: 1]]]", "a: {b: [c, {d: e}], f: g}", "x:\n- a\n- b\ny:\n- c\n", "k: v # c: d, e: f\n",
		"- a\n  - b\n", "a:\n  -\n  -\n", "- {a: 1}\n- {b: 2}\n", "a: 1\n  \n\nb: 2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if real, got := parsedNodes(string(data)), countNodes(data, 1<<40); got < real {
			t.Fatalf("countNodes = %d, the parser built %d nodes for %q", got, real, data)
		}
	})
}

func countTree(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += countTree(k)
	}
	return c
}

// The costs countNodes charges are upper bounds of what the YAML parser
// allocates, for flat lists of each kind of node (the costliest shape: the
// lists' slices grow the most).
func TestParseCostsAreUpperBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("parses 30 MB of lists")
	}
	list := func(item string, n int) string { return "[" + strings.Repeat(item+",", n) + "a]" }
	long := strings.Repeat("a", 1000)
	var keys strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&keys, "k%s%d: v\n", strings.Repeat("x", i%7), i)
	}
	tests := []struct{ name, doc string }{
		{"plain", list("a", 100_000)},
		{"plain, 16 bytes", list("abcdefghijklmnop", 100_000)},
		{"digit", list("1a", 100_000)},
		{"address", list("10.1.2.3:8080", 100_000)},
		{"integer", list("1", 100_000)},
		{"float", list("1.5", 100_000)},
		{"date", list("2026-01-01", 100_000)},
		{"dot", list(".a", 100_000)},
		{"sign", list("-a", 100_000)},
		{"boolean", list("true", 100_000)},
		{"null", list("~", 100_000)},
		{"double-quoted", list(`"a"`, 100_000)},
		{"single-quoted", list(`'1a'`, 100_000)},
		{"mapping", list("{}", 100_000)},
		{"sequence", list("[]", 100_000)},
		{"block sequence", strings.Repeat("- a\n", 100_000)},
		{"block nulls", strings.Repeat("-\n", 100_000)},
		{"block mapping", keys.String()},
		{"alias", "- &a x\n" + strings.Repeat("- *a\n", 100_000)},
		{"long plain", list("a"+long, 5000)},
		{"long digit", list("1_"+long, 5000)},
		{"long date", list("2026-"+long, 5000)},
		{"long date and words", list("2026-01-01 "+long, 5000)},
		{"long quoted", list(`"1`+long+`"`, 5000)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.doc)
			n, cost := measure(data, 1<<40, math.MaxInt64)
			parsed := int64(cost) - costDecode*int64(n) // what the YAML parser may allocate
			got, _ := allocated(func() {
				var doc yaml.Node
				if err := yaml.Unmarshal(data, &doc); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("%d nodes, %d bytes: %.1f MB allocated, %.1f MB charged (%.0f%%)", n, len(data), float64(got)/1e6, float64(parsed)/1e6, 100*float64(got)/float64(parsed))
			if int64(got) > parsed {
				t.Errorf("the YAML parser allocated %d bytes, more than the %d charged", got, parsed)
			}
		})
	}
}

// Documents at the node limit that cost more than maxParseCost to parse
// are refused before they are parsed; the same shapes made just small
// enough to fit cost Parse at most maxParseCost.
func TestParseBoundsWhatAcceptedDocumentsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("parses documents of up to 150 MB of cost")
	}
	shapes := []struct {
		name string
		gen  func(n int) string // n repetitions of the shape
		max  int                // n at the node limit
	}{
		{"services without a body", func(n int) string {
			var b strings.Builder
			b.WriteString("services:\n")
			for i := range n {
				fmt.Fprintf(&b, "  s%d:\n", i)
			}
			return b.String()
		}, 224_000},
		{"labels of one endpoint", func(n int) string {
			var b strings.Builder
			b.WriteString("services:\n  s:\n    endpoints:\n      - address: a:1\n        labels:\n")
			for i := range n {
				fmt.Fprintf(&b, "          l%d: v\n", i)
			}
			return b.String()
		}, 224_000},
		{"endpoints", func(n int) string {
			var b strings.Builder
			b.WriteString("services:\n  s:\n    endpoints:\n")
			for i := range n {
				fmt.Fprintf(&b, "      - address: 10.0.%d.%d:80\n", i>>8&255, i&255)
			}
			return b.String()
		}, 149_000},
		{"list items like 1a", func(n int) string {
			return "services:\n  s:\n    retry:\n      retry_on:\n" + strings.Repeat("        - 1a\n", n)
		}, 449_000},
		{"list items like dates", func(n int) string {
			return "services:\n  s:\n    retry:\n      retry_on:\n" + strings.Repeat("        - 2026-01-01\n", n)
		}, 390_000}, // at the size limit
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			data := []byte(sh.gen(sh.max))
			if n := countNodes(data, 1<<40); n > maxNodes {
				t.Fatalf("%d nodes: not within the node limit", n)
			}
			var err error
			bytes, took := allocated(func() { _, err = Parse(data) })
			t.Logf("at the node limit, %d bytes: refused in %v, %.1f MB allocated: %v", len(data), took, float64(bytes)/1e6, err)
			want := fmt.Sprintf("document too large: would take more than %d MB to parse", maxParseCost/1_000_000)
			if err == nil || problemsOf(t, err)[0] != want {
				t.Fatalf("Parse = %v, want %q", err, want)
			}
			if bytes > 1<<20 {
				t.Errorf("refusing allocated %.1f MB, want at most 1 MB", float64(bytes)/1e6)
			}

			// The most repetitions that fit the budget.
			lo, hi := 0, sh.max
			for lo < hi {
				mid := (lo + hi + 1) / 2
				if _, cost := measure([]byte(sh.gen(mid)), maxNodes, maxParseCost); cost <= maxParseCost {
					lo = mid
				} else {
					hi = mid - 1
				}
			}
			data = []byte(sh.gen(lo))
			bytes, took = allocated(func() { _, err = Parse(data) })
			t.Logf("%d repetitions, %d bytes: parsed in %v, %.1f MB allocated: %.100v", lo, len(data), took, float64(bytes)/1e6, err)
			if err != nil && strings.Contains(err.Error(), "too large") {
				t.Fatalf("Parse refused it: %v", err)
			}
			if bytes > maxParseCost && !raceEnabled() {
				t.Errorf("Parse allocated %.1f MB, more than the budget of %d MB", float64(bytes)/1e6, maxParseCost/1_000_000)
			}
		})
	}
}

// The services and routes a snapshot resolves are bounded, however few
// bytes ask for them: inherited routes multiply.
func TestParseBoundsWhatSnapshotsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("makes snapshots of 50,000 services")
	}
	services := func(n int, defaultRoutes int) string {
		var b strings.Builder
		if defaultRoutes > 0 {
			b.WriteString("defaults:\n  routes:\n")
			for i := range defaultRoutes {
				fmt.Fprintf(&b, "    - {name: r%d, match: {path_prefix: /x%d}}\n", i, i)
			}
		}
		b.WriteString("services:\n")
		for i := range n {
			fmt.Fprintf(&b, "  s%d:\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name     string
		doc      string
		want     string // the problem, "" if accepted
		snapshot uint64 // bytes NewSnapshot may allocate
	}{
		{"200 default routes for 20,000 services", services(20_000, 200), "services: too many routes: the services resolve to 4000000 routes (their own, or the 200 of defaults.routes each inherits), at most 100000", 0},
		{"50,001 services", services(50_001, 0), "services: too many services: 50001, at most 50000", 0},
		{"50,000 services", services(50_000, 0), "", 60 << 20},
		{"20 default routes for 5,000 services", services(5_000, 20), "", 48 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.doc)
			var doc *Document
			var err error
			bytes, took := allocated(func() { doc, err = Parse(data) })
			t.Logf("%d bytes: Parse in %v, %.1f MB allocated: %.100v", len(data), took, float64(bytes)/1e6, err)
			if tc.want != "" {
				if err == nil {
					t.Fatal("accepted")
				}
				if got := problemsOf(t, err); got[0] != tc.want {
					t.Errorf("first problem %q, want %q", got[0], tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			snapBytes, took := allocated(func() { _, err = NewSnapshot(doc, "test") })
			t.Logf("NewSnapshot in %v, %.1f MB allocated", took, float64(snapBytes)/1e6)
			if err != nil {
				t.Fatal(err)
			}
			if snapBytes > tc.snapshot {
				t.Errorf("NewSnapshot allocated %.1f MB, want at most %.1f MB", float64(snapBytes)/1e6, float64(tc.snapshot)/1e6)
			}
		})
	}
}
