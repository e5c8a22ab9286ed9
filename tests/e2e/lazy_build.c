/* Helper of tests/e2e/test_lazy_fetcher_supervision.py, compiled by the
 * test against the built libraries:
 *   lazy_build SRC OUT STORE
 * builds the lazy form of tree SRC into OUT (meta.erofs, blob, chunks:
 * lg_lazy_build) with every chunk put into the chunk store STORE
 * ($LEGION_HOME/lazy), as a layer converted on this node. */
#include <stdio.h>

#include "lazy/chunkstore.h"
#include "lazy/lazy.h"

int main(int argc, char **argv) {
        if (argc != 4) {
                fputs("usage: lazy_build SRC OUT STORE\n", stderr);
                return 2;
        }
        struct lg_error err = {0};
        lg_chunk_store *store = NULL;
        struct lg_lazy_build_result res;
        if (lg_chunk_store_open(argv[3], &store, &err) < 0 ||
            lg_lazy_build(argv[1], argv[2], 65536, store, &res, &err) < 0) {
                fprintf(stderr, "lazy_build: %s\n", err.msg);
                return 1;
        }
        lg_chunk_store_close(store);
        printf("{\"blobSize\":%llu,\"chunks\":%llu,\"blob\":\"%s\"}\n", (unsigned long long) res.blob_size,
               (unsigned long long) res.n_chunks, res.blob_digest);
        return 0;
}
