package cardano

import "golang.org/x/mod/sumdb/note"

type notev = note.Verifier
