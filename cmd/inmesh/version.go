package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// buildVersion is what version prints.
type buildVersion struct {
	Module   string `json:"module"`
	Version  string `json:"version"`            // the module version, "(devel)" for a build from a checkout
	Revision string `json:"revision,omitempty"` // the VCS revision, when the build recorded it
	Time     string `json:"revision_time,omitempty"`
	Modified bool   `json:"modified,omitempty"` // the checkout had changes not committed
	Go       string `json:"go_version"`
}

// readVersion reads the build information of the binary.
func readVersion() buildVersion {
	v := buildVersion{Module: "github.com/inmesh/inmesh", Version: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// version prints the module version, the VCS revision and the Go version.
func version(args []string, stdout, stderr io.Writer) int {
	c := newCommand("version", `inmesh version [-o text|json]

Prints the module version of this binary, the VCS revision it was built
from (when the build recorded it) and the Go version.`, stderr)
	out := c.outputFlag()
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 0 {
		return c.usageError(stderr)
	}
	v := readVersion()
	if *out == "json" {
		writeJSON(stdout, v)
		return 0
	}
	fmt.Fprintf(stdout, "inmesh %s (%s)\n", v.Version, v.Module)
	if v.Revision != "" {
		rev := v.Revision
		if v.Time != "" {
			rev += " of " + v.Time
		}
		if v.Modified {
			rev += ", with changes not committed"
		}
		fmt.Fprintf(stdout, "revision %s\n", rev)
	} else {
		fmt.Fprintln(stdout, "revision unknown: the build recorded none")
	}
	fmt.Fprintf(stdout, "built with %s\n", v.Go)
	return 0
}
