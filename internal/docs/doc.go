// Package docs holds repository-wide checks on the source tree itself, such
// as every package carrying a doc comment.
package docs
