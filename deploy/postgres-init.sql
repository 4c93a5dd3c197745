-- One database per service.
CREATE DATABASE oms_orders;
CREATE DATABASE oms_inventory;
CREATE DATABASE oms_notifications;
CREATE DATABASE oms_payments;
CREATE DATABASE oms_gateway;
