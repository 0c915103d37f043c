package meshgrpc

import (
	"context"
	"fmt"
	"net/http"
	"testing"
)

// Consistent-hash load balancing, in every protocol.

// hashSpread calls billing as each of users, calls times each, with
// call(user); it checks that every call succeeds and that a user always
// reaches the same backend, and returns each user's backend.
func hashSpread(t *testing.T, users, calls int, call func(user string) result) map[string]string {
	t.Helper()
	owner := map[string]string{}
	for u := range users {
		user := fmt.Sprint("user-", u)
		for range calls {
			r := call(user)
			if !r.ok() {
				t.Fatalf("call as %s: %v", user, r)
			}
			if prev, seen := owner[user]; seen && prev != r.from {
				t.Fatalf("%s reached %s, then %s", user, prev, r.from)
			}
			owner[user] = r.from
		}
	}
	return owner
}

// backendsOf counts the users of each backend.
func backendsOf(owner map[string]string) map[string]int {
	n := map[string]int{}
	for _, b := range owner {
		n[b]++
	}
	return n
}

func TestHashByHeader(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		for _, lb := range []string{"ring_hash", "maglev"} {
			t.Run(lb, func(t *testing.T) {
				settings := fmt.Sprintf("    load_balancer: {policy: %s, hash: {header: x-user}}\n", lb)
				f := startFleet(t, md, settings, nil, alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok))
				owner := hashSpread(t, 40, 5, func(user string) result { return f.call(context.Background(), "x-user", user) })
				spread := backendsOf(owner)
				t.Logf("users by backend: %v", spread)
				if len(spread) < 3 {
					t.Errorf("40 users reached %d backends (%v), want them spread over at least 3 of 4", len(spread), spread)
				}
				var total int64
				for _, hits := range f.Hits {
					total += hits()
				}
				if total != 200 {
					t.Errorf("backends saw %d calls, want 200", total)
				}
			})
		}
	}, allModes...)
}

// A retry of a hashed call goes to the next host for its key, the same one
// every time: a user whose own backend fails is served by one other.
func TestHashRetryTakesNextHost(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		settings := "    load_balancer: {hash: [{header: x-user}]}\n    retry: {attempts: 2, retry_on: [503, unavailable]}\n"
		f := startFleet(t, md, settings, nil, alwaysAnswer(fail), alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok))
		owner := hashSpread(t, 40, 3, func(user string) result { return f.call(context.Background(), "x-user", user) })
		if f.Hits[0]() == 0 {
			t.Fatalf("no user's first attempt reached the failing backend b0 (%v)", backendsOf(owner))
		}
		if f.Hits[0]()%3 != 0 {
			t.Errorf("b0 saw %d attempts: a user who reaches it should every time (3 calls each)", f.Hits[0]())
		}
		for u, b := range owner {
			if b == "b0" {
				t.Errorf("%s answered by the failing b0", u)
			}
		}
	}, modeHTTP1, modeGRPC)
}

func TestHashByCookieAndQuery(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		backends := []behaviour{alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok)}
		t.Run("cookie", func(t *testing.T) {
			f := startFleet(t, md, "    load_balancer: {hash: {cookie: session}}\n", nil, backends...)
			owner := hashSpread(t, 40, 4, func(user string) result {
				return f.request(context.Background(), http.MethodGet, "http://billing/x", "", "Cookie", "theme=dark; session="+user+"; lang=en")
			})
			if spread := backendsOf(owner); len(spread) < 3 {
				t.Errorf("40 sessions reached %d backends (%v), want at least 3 of 4", len(spread), spread)
			}
		})
		t.Run("query_parameter", func(t *testing.T) {
			f := startFleet(t, md, "    load_balancer: {policy: maglev, hash: {query_parameter: user}}\n", nil, backends...)
			owner := hashSpread(t, 40, 4, func(user string) result {
				return f.request(context.Background(), http.MethodGet, "http://billing/x?a=1&user="+user, "")
			})
			if spread := backendsOf(owner); len(spread) < 3 {
				t.Errorf("40 users reached %d backends (%v), want at least 3 of 4", len(spread), spread)
			}
		})
	}, modeHTTP1, modeHTTP2)
}

// Without a hash value (no x-user) calls spread as random does; with
// source_ip every call of the process goes to one backend.
func TestHashWithoutValueAndSourceIP(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		backends := []behaviour{alwaysAnswer(ok), alwaysAnswer(ok), alwaysAnswer(ok)}
		f := startFleet(t, md, "    load_balancer: {hash: {header: x-user}}\n", nil, backends...)
		// (Bounded by a count, not a time: while gRPC connections are
		// still being made, the ready ones take the calls.)
		seen := map[string]int{}
		for n := 0; n < 3000 && len(seen) < 3; n++ {
			r := f.call(context.Background())
			if !r.ok() {
				t.Fatalf("call: %v", r)
			}
			seen[r.from]++
		}
		if len(seen) != 3 {
			t.Errorf("calls without x-user reached %v, want every backend", seen)
		}

		g := startFleet(t, md, "    load_balancer: {hash: [{header: x-user, terminal: true}, {source_ip: true}]}\n", nil, backends...)
		seen = map[string]int{}
		for range 30 {
			seen[g.call(context.Background()).from]++
		}
		if len(seen) != 1 {
			t.Errorf("source_ip: 30 calls reached %v, want one backend", seen)
		}
	})
}

// An ejected endpoint is passed over for the next one on the ring: the
// users of a failing backend fail once (the call that ejects it), then
// each reaches one other backend for good.
func TestHashSkipsEjected(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		settings := "    load_balancer: {hash: {header: x-user}}\n    outlier_detection: {consecutive_failures: 1, base_ejection: 1h, max_ejection_percent: 50}\n"
		f := startFleet(t, md, settings, nil, alwaysAnswer(fail), alwaysAnswer(ok), alwaysAnswer(ok))
		failed := 0
		owner := map[string]string{}
		for u := range 40 {
			user := fmt.Sprint("user-", u)
			for range 3 {
				r := f.call(context.Background(), "x-user", user)
				if !r.ok() {
					failed++
					continue
				}
				if prev, seen := owner[user]; seen && prev != r.from {
					t.Fatalf("%s reached %s, then %s", user, prev, r.from)
				}
				owner[user] = r.from
			}
		}
		if failed != 1 || f.Hits[0]() != 1 {
			t.Errorf("%d calls failed, b0 saw %d: want the one that ejected it", failed, f.Hits[0]())
		}
		if len(owner) != 40 || len(backendsOf(owner)) != 2 {
			t.Errorf("users by backend %v, want all 40 over b1 and b2", backendsOf(owner))
		}
	}, modeHTTP1, modeGRPC)
}
