package meshtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Chromium returns the path of a headless browser (Debian's chromium,
// which .ci/run installs, or $INMESH_CHROMIUM). It skips t when none is
// installed, unless the CI variable is set: then it fails t.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{os.Getenv("INMESH_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "no chromium: apt-get install -y chromium (.ci/run installs it), or set INMESH_CHROMIUM"
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: a missing browser is a failure)", msg)
	}
	t.Skip(msg)
	return ""
}

// DumpDOM loads url in the headless browser bin and returns the DOM it
// built.
func DumpDOM(t testing.TB, bin, url string) string {
	t.Helper()
	// A bound on a hung browser, not a measure: no test asserts time.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--disable-gpu", "--no-sandbox",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--dump-dom", url)
	cmd.WaitDelay = 10 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
}
