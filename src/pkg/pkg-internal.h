/* Helpers shared by the files of the pkg module; not part of its interface. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "extract/extract.h"
#include "pkg/pkg.h"

/* Prefix of every temporary name in a store's directories. */
#define LG_PKG_TMP_PREFIX ".tmp-"

/* mkstemp-like name: prefix + 16 random hex characters. */
int lg_pkg_tmp_name(char *buf, size_t cap, const char *what);


/* The names in directory dfd (not consumed) but `.` and `..`, sorted
 * bytewise, NULL-terminated (*n of them); free with lg_pkg_names_free. */
int lg_pkg_list_dir(int dfd, char ***ret, size_t *n);
void lg_pkg_names_free(char **v);
