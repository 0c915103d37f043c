package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ---- the policy file enrollment watches, and the edit of the canary phase ----

// writePolicy writes data to path atomically (a temporary file in the same
// directory, renamed over path), so that the mesh watching path never reads
// half a document.
func writePolicy(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mesh-*.yaml")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// withAddresses returns data with every endpoint address in moved replaced
// by the one the demo bound instead.
func withAddresses(data []byte, moved map[string]string) []byte {
	for from, to := range moved {
		data = bytes.ReplaceAll(data, []byte("address: "+from), []byte("address: "+to))
	}
	return data
}

// shiftCanary returns the document in data with the share (percent) of
// every billing split between v1 and v2 set to share for v2, and its
// version moved to the next one, which it returns too. Comments and layout
// are kept.
func shiftCanary(data []byte, share int) ([]byte, string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, "", fmt.Errorf("platform: policy: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil, "", errors.New("platform: policy: not a document")
	}
	doc := root.Content[0]
	version := get(doc, "version")
	if version == nil {
		return nil, "", errors.New("platform: policy: no version")
	}
	version.Value = nextVersion(version.Value)
	routes := get(get(get(doc, "services"), "billing"), "routes")
	if routes == nil {
		return nil, "", errors.New("platform: policy: services.billing has no routes to shift")
	}
	shifted := 0
	for _, route := range routes.Content {
		split := get(route, "split")
		if split == nil || len(split.Content) != 2 {
			continue
		}
		weights := map[string]*yaml.Node{}
		for _, e := range split.Content {
			if s, w := get(e, "subset"), get(e, "weight"); s != nil && w != nil {
				weights[s.Value] = w
			}
		}
		if weights["v1"] == nil || weights["v2"] == nil {
			continue
		}
		weights["v1"].Value = strconv.Itoa(100 - share)
		weights["v2"].Value = strconv.Itoa(share)
		shifted++
	}
	if shifted == 0 {
		return nil, "", errors.New("platform: policy: services.billing has no v1/v2 split to shift")
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, "", fmt.Errorf("platform: policy: %w", err)
	}
	return out.Bytes(), version.Value, enc.Close()
}

// get is the value of key in mapping n, nil when n is no mapping or lacks it.
func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// nextVersion counts up the last dot-separated number of v ("2026-11-26.1"
// becomes "2026-11-26.2"), or appends ".2".
func nextVersion(v string) string {
	if i := strings.LastIndexByte(v, '.'); i >= 0 {
		if n, err := strconv.Atoi(v[i+1:]); err == nil {
			return v[:i+1] + strconv.Itoa(n+1)
		}
	}
	return v + ".2"
}
