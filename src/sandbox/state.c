/* placeholder, replaced by the real module */
typedef int lg_placeholder_t;
