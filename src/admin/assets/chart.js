/* placeholder: the dashboard front-end lands with the admin-ui branch */
