package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/inmesh/inmesh/policy"
)

// adminStatus is what status --admin prints: one process's policy in
// force and what is not as it should be.
type adminStatus struct {
	Admin           string          `json:"admin"`
	Service         string          `json:"service"`
	Version         string          `json:"version"`
	Hash            string          `json:"hash"`
	Source          string          `json:"source"`
	Loaded          time.Time       `json:"loaded"`
	UpdatesApplied  int64           `json:"updates_applied"`
	UpdatesRejected int64           `json:"updates_rejected"`
	LastRejection   *adminRejection `json:"last_rejection,omitempty"`
	// Breakers lists the breakers that are not closed; empty when all are.
	Breakers []adminBreaker `json:"breakers_not_closed"`
	// Faults lists the fault injections in force.
	Faults []adminFault `json:"faults_active"`
}

// adminRejection is the last policy update the process rejected.
type adminRejection struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	Error  string    `json:"error"`
}

// adminBreaker is a breaker of /breakers.
type adminBreaker struct {
	Service string `json:"service"`
	Route   string `json:"route,omitempty"`
	State   string `json:"state"`
}

// adminFault is a fault injection of /protections.
type adminFault struct {
	Service string        `json:"service"`
	Route   string        `json:"route"`
	Fault   *policy.Fault `json:"fault"`
}

// statusAdmin reads /config, /breakers and /protections of the admin
// handler at base and prints the process's status.
func statusAdmin(base, out string, stdout, stderr io.Writer) int {
	base = strings.TrimSuffix(base, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := adminStatus{Admin: base}
	var breakers []adminBreaker
	var prot struct {
		Faults []adminFault `json:"faults"`
	}
	for _, page := range []struct {
		path string
		into any
	}{{"/config", &st}, {"/breakers", &breakers}, {"/protections", &prot}} {
		if err := getJSON(ctx, base+page.path, page.into); err != nil {
			fmt.Fprintf(stderr, "inmesh status: %v\n", err)
			return 1
		}
	}
	st.Admin = base
	st.Breakers = []adminBreaker{}
	for _, b := range breakers {
		if b.State != "closed" {
			st.Breakers = append(st.Breakers, b)
		}
	}
	st.Faults = prot.Faults
	if st.Faults == nil {
		st.Faults = []adminFault{}
	}
	if out == "json" {
		writeJSON(stdout, st)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

// getJSON GETs url and decodes its JSON body into v.
func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: not the admin handler's JSON: %v", url, err)
	}
	return nil
}

func printStatus(w io.Writer, st adminStatus) {
	line := func(k, v string) { fmt.Fprintf(w, "%-9s %s\n", k+":", v) }
	line("service", st.Service)
	ver := st.Version
	if st.Hash != "" && st.Hash != st.Version {
		ver += " (" + st.Hash + ")"
	}
	line("policy", ver)
	line("source", st.Source)
	line("loaded", st.Loaded.Format(time.RFC3339))
	line("updates", fmt.Sprintf("%d applied, %d rejected", st.UpdatesApplied, st.UpdatesRejected))
	if r := st.LastRejection; r != nil {
		line("rejected", fmt.Sprintf("last at %s from %s: %s", r.At.Format(time.RFC3339), r.Source, r.Error))
	}
	if len(st.Breakers) == 0 {
		line("breakers", "all closed")
	}
	for _, b := range st.Breakers {
		name := b.Service
		if b.Route != "" {
			name += " route " + b.Route
		}
		line("breaker", fmt.Sprintf("%s: %s", name, b.State))
	}
	if len(st.Faults) == 0 {
		line("faults", "none")
	}
	for _, f := range st.Faults {
		to := f.Service
		if f.Route != "" {
			to += " route " + f.Route
		}
		what := "(unknown)"
		if f.Fault != nil {
			what = faultText(f.Fault)
		}
		line("FAULT", fmt.Sprintf("injected toward %s: %s", to, what))
	}
}
