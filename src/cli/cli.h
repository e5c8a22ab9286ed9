/* Verb groups of the legion CLI. Each takes argv starting at its own name
 * and returns the process exit status. */
#pragma once

int cmd_sandbox(int argc, char **argv);

/* Clients of legiond's HTTP API (client.h): */
int cmd_app(int argc, char **argv);
int cmd_app_keys(int argc, char **argv); /* `legion app keys`, from cmd_app; in cmd-ns.c with tokens */
int cmd_invoke(int argc, char **argv);
int cmd_pool(int argc, char **argv);
int cmd_ns(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_sessionpool(int argc, char **argv);
int cmd_session(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_pod(int argc, char **argv);
int cmd_kubeconfig(int argc, char **argv);
int cmd_package(int argc, char **argv);
/* Serverless jobs (cmd-job.c): `legion submit`, `legion deploy-master`,
 * `legion job ...`, `legion master ...`. */
int cmd_submit(int argc, char **argv);
int cmd_deploy_master(int argc, char **argv);
int cmd_job(int argc, char **argv);
int cmd_master(int argc, char **argv);

#include <stdint.h>

#include "common/util.h"

/* Pack dir as `app deploy` does (a deterministic tar.gz without .git and
 * __pycache__) into a memfd (*ret, rewound; > 0) of *size bytes; -EFBIG
 * above max. In cmd-app.c. */
int cli_pack_dir(const char *dir, uint64_t max, int *ret, uint64_t *size, struct lg_error *err);
/* The same for files and directories each under its name (lg_pkg_pack_paths). */
int cli_pack_paths(const char *const *paths, size_t n, uint64_t max, int *ret, uint64_t *size,
                   struct lg_error *err);
/* Upload a package of size bytes from fd to the namespace's packages
 * (POST /v1/namespaces/{ns}/packages); its digest goes to digest. */
struct lg_digest;
int cli_upload_package(int fd, uint64_t size, struct lg_digest *digest, struct lg_error *err);
