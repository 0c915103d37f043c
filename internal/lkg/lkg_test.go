package lkg

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testState(t *testing.T) *State {
	doc, err := policy.Parse([]byte("services: {billing: {endpoints: [{address: 127.0.0.1:9001}], timeout: 2s}}"))
	if err != nil {
		t.Fatal(err)
	}
	return &State{
		Service: "enrollment", Written: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC), Source: "consul:inmesh@42",
		Version: "sha256:abc", Policy: doc,
		Endpoints: map[string][]discovery.Endpoint{"billing": {{Address: "127.0.0.1:9001", Labels: map[string]string{"version": "v1"}}}},
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	st := testState(t)
	if err := Save(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, "enrollment")
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := policy.Hash(st.Policy)
	h2, _ := policy.Hash(got.Policy)
	if h1 != h2 || got.Source != st.Source || !got.Written.Equal(st.Written) || got.Endpoints["billing"][0].Labels["version"] != "v1" {
		t.Fatalf("loaded %+v", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mangle  func(t *testing.T, dir string)
		service string
		want    string
	}{
		{"missing", func(*testing.T, string) {}, "enrollment", "no cache"},
		{"another service", func(t *testing.T, dir string) {
			st := testState(t)
			st.Service = "progress"
			if err := Save(dir, st); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(Path(dir, "progress"))
			_ = os.WriteFile(Path(dir, "enrollment"), data, 0o644)
		}, "enrollment", `cache of service "progress"`},
		{"flipped byte", func(t *testing.T, dir string) {
			if err := Save(dir, testState(t)); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(Path(dir, "enrollment"))
			data = bytes.Replace(data, []byte("9001"), []byte("9002"), 1)
			_ = os.WriteFile(Path(dir, "enrollment"), data, 0o644)
		}, "enrollment", "checksum mismatch"},
		{"truncated", func(t *testing.T, dir string) {
			if err := Save(dir, testState(t)); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(Path(dir, "enrollment"))
			_ = os.WriteFile(Path(dir, "enrollment"), data[:len(data)/2], 0o644)
		}, "enrollment", "corrupt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.mangle(t, dir)
			_, err := Load(dir, tc.service)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want it to say %q", err, tc.want)
			}
			if tc.name == "missing" && !errors.Is(err, ErrNoCache) {
				t.Fatalf("want ErrNoCache, got %v", err)
			}
		})
	}
}
