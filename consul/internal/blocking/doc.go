// Package blocking runs Consul blocking queries in a loop with the
// discipline Consul asks of its clients, shared by every Consul watch of
// inmesh (KV policy, health, Connect CA leaf, intentions, config entries):
//
//   - the index of the next query is the X-Consul-Index of the last answer;
//     it is reset to 0 when it goes backwards (a snapshot restore, a new
//     leader) and never below 1 otherwise (an answer of 0 counts as 1);
//   - errors, 429 and 5xx answers alike, are retried after a jittered
//     exponential backoff with a cap, and are never taken as "deleted";
//     after an error that is no answer at all (refused, reset), the next
//     query reads in full (index 0): a restarted agent counts its indexes
//     from scratch, and a query blocking on our old index would hang;
//   - loops are rate limited, so a key that churns cannot make the client
//     spin;
//   - X-Consul-LastContact is reported so callers can export staleness.
//
// A Loop is owned by the goroutine that calls Run; Run returns when its
// context ends.
package blocking
