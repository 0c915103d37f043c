package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/inmesh/inmesh/consul"
)

// statusConsul prints the fleet's policy versions per service, as the
// instances registered in the Consul of cf reported them.
func statusConsul(cf *consulFlags, statusPrefix, out string, stdout, stderr io.Writer) int {
	client, err := cf.client()
	if err != nil {
		fmt.Fprintf(stderr, "inmesh status: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fleet, err := consul.FleetStatus(ctx, consul.Config{Client: client, Prefix: cf.prefix, StatusPrefix: statusPrefix})
	if err != nil {
		fmt.Fprintf(stderr, "inmesh status: %v\n", err)
		return 1
	}
	if out == "json" {
		writeJSON(stdout, fleet)
		return 0
	}
	if len(fleet) == 0 {
		fmt.Fprintln(stdout, "no instance has reported a policy version (instances report once their mesh has registered them)")
		return 0
	}
	fmt.Fprintf(stdout, "%-24s %-28s %9s  %s\n", "SERVICE", "POLICY VERSION", "INSTANCES", "NOTES")
	for _, ss := range fleet {
		versions := slices.SortedFunc(maps.Keys(ss.Versions), func(a, b string) int {
			// The version most instances run first.
			if d := len(ss.Versions[b]) - len(ss.Versions[a]); d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
		for i, v := range versions {
			var notes []string
			if i == 0 && len(versions) > 1 {
				notes = append(notes, fmt.Sprintf("%d versions in the fleet", len(versions)))
			}
			cached := 0
			for _, st := range ss.Versions[v] {
				if st.Cached {
					cached++
				}
			}
			if cached > 0 {
				notes = append(notes, fmt.Sprintf("%d from the cache (control plane unreachable)", cached))
			}
			fmt.Fprintf(stdout, "%-24s %-28s %9d  %s\n", ss.Service, v, len(ss.Versions[v]), strings.Join(notes, "; "))
		}
		if len(ss.Stale) > 0 {
			fmt.Fprintf(stdout, "%-24s %-28s %9d  stale: the catalog no longer has them\n", ss.Service, "-", len(ss.Stale))
		}
	}
	return 0
}
