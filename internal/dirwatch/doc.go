// Package dirwatch watches the directories that hold a set of files, and
// the directories of their symlink targets, with fsnotify. Watching the
// directory rather than the file is what makes editors' rename-writes,
// Kubernetes-style "..data" symlink swaps and in-place edits of a link's
// target all visible. When fsnotify cannot be set up the watcher is inert
// and its owner polls.
//
// Run is the reload loop the file sources share: it debounces events,
// reloads, and backs the watch up with a periodic reload (more often while
// a directory is not watched).
//
// A Watcher belongs to the one goroutine that reads its channels (the one
// in Run); it is not safe for concurrent use. The policy file source and
// the identity file source use it, off the request path: they publish
// snapshots that calls then read.
package dirwatch
