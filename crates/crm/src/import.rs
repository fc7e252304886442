//! CSV import and export of customers.
