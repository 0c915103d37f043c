// Package lkg keeps a workload's last-known-good control-plane state on
// disk: the policy document in force and the endpoints of its
// destinations, written atomically after each applied update, so that a
// restart while the control plane is down can serve what was last known.
//
// A cache file is refused when it is corrupt (its checksum does not match),
// belongs to another service, or holds a policy that does not validate.
// Files are written with internal/atomicfile (a synced temporary file,
// renamed into place), so a reader never sees half a file.
package lkg
