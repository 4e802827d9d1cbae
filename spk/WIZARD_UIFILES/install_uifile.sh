#!/bin/sh
# Generates the install wizard at install time (DSM runs this and reads the JSON it writes to
# SYNOPKG_TEMP_LOGFILE): the install_uifile step, with the setup token field prefilled with a
# fresh random token so the admin can copy it now. If this fails, DSM shows install_uifile.
out="${SYNOPKG_TEMP_LOGFILE:?}"
token=$(LC_ALL=C tr -dc 'A-Za-z0-9' < /dev/urandom 2>/dev/null | head -c 24)
[ "${#token}" -eq 24 ] || token=""
cat > "$out" <<JSON
[
    {
        "step_title": "rtcbox admin panel",
        "items": [
            {
                "type": "textfield",
                "desc": "rtcbox's admin panel (http://&lt;NAS address&gt;:8089, also in the main menu) asks for this one-time setup token before you choose the admin password. Copy it now (or type your own: 16 or more letters and digits). Empty: rtcbox makes one and writes it to its log (Package Center, rtcbox, log). There is no default password.",
                "subitems": [
                    {
                        "key": "pkgwizard_setup_token",
                        "desc": "Setup token",
                        "defaultValue": "$token",
                        "validator": {
                            "allowBlank": true,
                            "minLength": 16,
                            "regex": {
                                "expr": "/^[A-Za-z0-9]{16,}\$/",
                                "errorText": "16 or more letters and digits"
                            }
                        }
                    }
                ]
            }
        ]
    }
]
JSON
exit 0
