package main

import (
	"io"
)

// status shows what running processes have in force: one process through
// its admin handler (--admin URL).
func status(args []string, stdout, stderr io.Writer) int {
	c := newCommand("status", `inmesh status --admin URL [-o text|json]

Shows what one running process has in force, read from its admin handler
(mesh.AdminHandler) mounted at URL: its service, the policy version, source
and load time, the policy updates applied and rejected with the last
rejection, the circuit breakers that are not closed and the faults it
injects.`, stderr)
	admin := c.fs.String("admin", "", "URL where a process mounts its mesh's admin handler, e.g. http://127.0.0.1:9901/debug/inmesh")
	out := c.outputFlag()
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 0 || *admin == "" {
		return c.usageError(stderr)
	}
	return statusAdmin(*admin, string(*out), stdout, stderr)
}
