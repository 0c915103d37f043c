package main

import (
	"io"
)

// status shows what running processes have in force: one process through
// its admin handler (--admin URL), or a fleet through what its registered
// instances reported to Consul (--consul ADDR).
func status(args []string, stdout, stderr io.Writer) int {
	c := newCommand("status", `inmesh status --admin URL [-o text|json]
inmesh status --consul ADDR [--prefix P] [--status-prefix S] [-o text|json]

With --admin, shows what one running process has in force, read from its
admin handler (mesh.AdminHandler) mounted at URL: its service, the policy
version, source and load time, the policy updates applied and rejected
with the last rejection, the circuit breakers that are not closed and the
faults it injects.

With --consul, shows the fleet: for each service, how many of its
registered instances run which policy version, how many serve from their
last-known-good cache, and the reports of instances the catalog no longer
has.`, stderr)
	admin := c.fs.String("admin", "", "URL where a process mounts its mesh's admin handler, e.g. http://127.0.0.1:9901/debug/inmesh")
	var cf consulFlags
	cf.register(c.fs)
	statusPrefix := c.fs.String("status-prefix", "", "KV prefix of the instances' reports (default: the policy's prefix + \"-status\")")
	out := c.outputFlag()
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 0 || (*admin == "") == (cf.addr == "") {
		return c.usageError(stderr)
	}
	if *admin != "" {
		return statusAdmin(*admin, string(*out), stdout, stderr)
	}
	return statusConsul(&cf, *statusPrefix, string(*out), stdout, stderr)
}
