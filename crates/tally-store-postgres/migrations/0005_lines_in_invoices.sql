-- An invoice's lines are kept once, in the invoice's body: this table repeated them row by row
-- in every billing write and was read by nothing.
DROP TABLE invoice_lines;
