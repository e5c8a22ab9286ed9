/* OK(call): fail the test with the call's lg_error message (a variable
 * `err` in scope) when it returns < 0. Include after cmocka.h. */
#pragma once

#define OK(call)                                                                 \
        do {                                                                     \
                int r_ = (call);                                                 \
                if (r_ < 0)                                                      \
                        fail_msg("%s = %d: %s", #call, r_, err.msg);             \
        } while (0)
