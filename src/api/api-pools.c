/* Pool groups over HTTP: /v1/poolgroups[/{name}] (docs/api.md, "Pool
 * groups"). Reading is open to every token, changing needs the admin's.
 * A put of an image pool group pulls its image first (api_put_with_pull,
 * api-apps.c); the logic is src/apps (lg_apps_pool_*). */
#include <string.h>

#include "api/api-internal.h"

void api_pools(struct api_call *c, const char *name) {
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        if (!name) {
                if (strcmp(m, "GET")) {
                        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET");
                        return;
                }
                struct lg_resource_list l = {0};
                int r = lg_store_list(c->api->store, "PoolGroup", "", NULL, &l, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                json_t *items = json_array();
                for (size_t i = 0; i < l.n; i++)
                        json_array_append_new(items, lg_apps_pool_json(c->api->apps, l.items[i]));
                lg_resource_list_free(&l);
                api_json(c->req, 200, json_pack("{s:o}", "items", items));
                return;
        }
        if (!strcmp(m, "GET")) {
                struct lg_resource *res = NULL;
                int r = lg_store_get(c->api->store, LG_KEY("PoolGroup", "", name), &res, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                api_json(c->req, 200, lg_apps_pool_json(c->api->apps, res));
                lg_resource_free(res);
                return;
        }
        if (!api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "changing pool groups needs an admin token");
                return;
        }
        if (!strcmp(m, "DELETE")) {
                int r = lg_apps_pool_delete(c->api->apps, name, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                return;
        }
        if (strcmp(m, "PUT")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET, PUT or DELETE");
                return;
        }
        if (!lg_store_valid_name(name)) {
                lg_http_respond_error(c->req, 400, "BadRequest", "invalid pool group name `%s`", name);
                return;
        }
        json_t *spec = api_body_json(c->req);
        if (spec)
                api_put_with_pull(c, NULL, name, spec, NULL);
}
