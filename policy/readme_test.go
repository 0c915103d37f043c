package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEPolicyExamples: every YAML block of the README's policy
// reference is a valid document, so that what users copy works.
func TestREADMEPolicyExamples(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "## Policy reference")
	if start < 0 {
		t.Fatal("the README has no policy reference")
	}
	end := strings.Index(text[start+1:], "\n## ")
	if end < 0 {
		end = len(text) - start - 1
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(text[start:start+1+end], -1)
	if len(blocks) < 3 {
		t.Fatalf("%d YAML blocks in the policy reference, want at least 3", len(blocks))
	}
	for i, b := range blocks {
		if _, err := Parse([]byte(b[1])); err != nil {
			t.Errorf("block %d of the policy reference: %v\n%s", i+1, err, b[1])
		}
	}
}
