// Package lograte keeps the log records about one thing to one per
// interval, so that a failure repeated at the call rate (a dependency
// down, a denied caller under audit) is said without flooding the log,
// and the record that is kept says how many were left out.
//
// A Limiter is lock-free and allocation-free, safe for concurrent use, and
// its zero value is ready. It sits beside the request path: the mesh asks
// it before writing a failure's or an audit's record.
package lograte
