// Package atomicfile writes files so that a reader, or a process that
// crashes, never sees part of one: the data goes to a temporary file in the
// same directory, which is synced, then renamed (Write) or hard-linked
// (WriteNew) into place, and the directory is synced so that the new name
// survives a crash too.
//
// It holds functions only, safe for concurrent use; two writers of the same
// path through Write leave one of their contents, whole. It sits off the
// request path: the last-known-good cache (internal/lkg) and the dev CA's
// directory (identity.LoadOrCreateDevCA) write their files with it.
package atomicfile
